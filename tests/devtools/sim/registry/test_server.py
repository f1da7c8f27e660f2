"""The registry simulator speaks the distribution spec: challenges, tokens, manifests with
their digests, HEAD, Accept negotiation, blobs, tags, errors; and its CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.plugins.registry_sim import PASSWORD, USER
from vk_trio.cli import build_parser
from vk_trio.devtools.sim.registry import RegistrySim, sim_from_args
from vk_trio.devtools.sim.registry.cli import parse_image

CONFIG = {"config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]}}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def token(http: httpx.AsyncClient, sim: RegistrySim, name: str, **kw: object) -> str:
    answer = await http.get(
        f"{sim.url}/token",
        params={"service": "vk-trio-sim-registry", "scope": f"repository:{name}:pull"},
        **kw,  # type: ignore[arg-type]
    )
    assert answer.status_code == 200, answer.text
    value: str = answer.json()["token"]
    return value


async def test_the_api_root_challenges_for_a_bearer_token(registry_sim: RegistrySim) -> None:
    async with httpx.AsyncClient() as http:
        root = await http.get(f"{registry_sim.url}/v2/")
        assert root.status_code == 401
        challenge = root.headers["www-authenticate"]
        assert challenge == (
            f'Bearer realm="{registry_sim.url}/token",service="vk-trio-sim-registry"'
        )
        assert root.json()["errors"][0]["code"] == "UNAUTHORIZED"
        bearer = await token(http, registry_sim, "anything")
        ok = await http.get(
            f"{registry_sim.url}/v2/", headers={"Authorization": f"Bearer {bearer}"}
        )
        assert ok.status_code == 200


async def test_manifests_and_blobs_carry_their_digests(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("team/app", "1", CONFIG, [b"\x7fELF binary"])
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {await token(http, registry_sim, 'team/app')}"}
        base = f"{registry_sim.url}/v2/team/app"
        index = await http.get(f"{base}/manifests/1", headers={**auth, "Accept": OCI_INDEX})
        assert index.headers["content-type"] == OCI_INDEX
        assert index.headers["docker-content-digest"] == sha256(index.content) == built.digest
        platforms = [m["platform"]["architecture"] for m in index.json()["manifests"]]
        assert platforms == ["amd64", "arm64"]

        head = await http.head(f"{base}/manifests/1", headers={**auth, "Accept": OCI_INDEX})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["docker-content-digest"] == built.digest
        assert head.headers["content-length"] == str(len(index.content))

        only_manifests = await http.get(
            f"{base}/manifests/1", headers={**auth, "Accept": OCI_MANIFEST}
        )
        assert only_manifests.headers["docker-content-digest"] == built.manifests["linux/amd64"]
        manifest = only_manifests.json()
        assert manifest["config"]["digest"] == built.configs["linux/amd64"]

        layer_digest = manifest["layers"][0]["digest"]
        layer = await http.get(f"{base}/blobs/{layer_digest}", headers=auth)
        assert layer.content == b"\x7fELF binary"
        assert layer.headers["docker-content-digest"] == layer_digest == sha256(layer.content)
        config = await http.get(f"{base}/blobs/{built.configs['linux/arm64']}", headers=auth)
        assert config.json()["architecture"] == "arm64"
        assert config.json()["config"] == CONFIG["config"]

        tags = await http.get(f"{base}/tags/list", headers=auth)
        assert tags.json() == {"name": "team/app", "tags": ["1"]}


async def test_errors_use_the_distribution_codes(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {await token(http, registry_sim, 'app')}"}
        cases = {
            "/v2/app/manifests/2": "MANIFEST_UNKNOWN",
            "/v2/app/blobs/sha256:" + "0" * 64: "BLOB_UNKNOWN",
            "/v2/nope/manifests/1": "NAME_UNKNOWN",
        }
        for path, code in cases.items():
            answer = await http.get(registry_sim.url + path, headers=auth)
            assert (answer.status_code, answer.json()["errors"][0]["code"]) == (404, code)


async def test_private_repositories_need_basic_auth_at_the_token_endpoint(
    registry_sim: RegistrySim,
) -> None:
    registry_sim.add_image("secret", "1", CONFIG, private=True)
    registry_sim.add_image("public", "1", CONFIG)
    url, scope = f"{registry_sim.url}/token", {"scope": "repository:secret:pull"}
    async with httpx.AsyncClient() as http:
        assert (await http.get(url, params=scope)).status_code == 401
        assert (await http.get(url, params=scope, auth=(USER, "x"))).status_code == 401
        public_only = await token(http, registry_sim, "public")
        denied = await http.get(
            f"{registry_sim.url}/v2/secret/manifests/1",
            headers={"Authorization": f"Bearer {public_only}"},
        )
        assert denied.status_code == 401
        assert 'scope="repository:secret:pull"' in denied.headers["www-authenticate"]
        granted = await token(http, registry_sim, "secret", auth=(USER, PASSWORD))
        manifest = await http.get(
            f"{registry_sim.url}/v2/secret/manifests/1",
            headers={"Authorization": f"Bearer {granted}"},
        )
        assert manifest.status_code == 200


async def test_faults_count_and_answer_503(registry_sim: RegistrySim) -> None:
    registry_sim.faults.status = 503
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{registry_sim.url}/v2/")).status_code == 503
        assert (await http.get(f"{registry_sim.url}/token")).status_code == 503
    assert registry_sim.requests == {"ping": 1, "token": 1}


def test_images_come_from_cli_flags(tmp_path: Path) -> None:
    config = tmp_path / "app.json"
    config.write_text(json.dumps(CONFIG))
    args = build_parser().parse_args(
        [
            "sim",
            "registry",
            "--image",
            f"team/app:1={config}",
            "--private-image",
            f"secret:2={config}",
            "--user",
            f"{USER}:{PASSWORD}",
            "--listen",
            "127.0.0.1:0",
        ]
    )
    assert args.module == "vk_trio.devtools.sim.registry"
    sim = sim_from_args(args)
    assert sim.users == {USER: PASSWORD}
    assert not sim._is_private("team/app") and sim._is_private("secret")


@pytest.mark.parametrize("spec", ["app=x.json", "app:1", ":1=x.json", "app:=x.json"])
def test_bad_image_flags_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"NAME:TAG=CONFIG\.json"):
        parse_image(spec)


def test_private_images_need_a_user(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_bytes(msgspec.json.encode(CONFIG))
    args = build_parser().parse_args(["sim", "registry", "--private-image", f"a:1={config}"])
    with pytest.raises(ValueError, match="needs --user"):
        sim_from_args(args)
