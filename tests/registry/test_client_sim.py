"""RegistryClient against the registry simulator over real sockets on 127.0.0.1: indexes,
tags and digests, private repositories, every failure's reason, and the cache."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

from tests.plugins.registry_sim import PASSWORD, USER, RegistrySimFactory
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.errors import TemporaryError
from vk_trio.registry import (
    IMAGE_INVALID,
    IMAGE_NOT_FOUND,
    IMAGE_PLATFORM_UNSUPPORTED,
    IMAGE_UNAUTHORIZED,
    REGISTRY_UNAVAILABLE,
    ImageConfig,
    ImageConfigUnavailable,
    RegistryClient,
    image_config,
)

CONFIG: dict[str, Any] = {
    "config": {
        "Entrypoint": ["/usr/bin/tini", "--"],
        "Cmd": ["python", "serve.py"],
        "Env": ["PATH=/usr/local/bin:/usr/bin", "MODE=prod=yes"],
        "WorkingDir": "/app",
        "User": "1000:1000",
    }
}


async def lookup(image: str, **kwargs: Any) -> ImageConfig:
    async with RegistryClient() as client:
        return await client.image_config(image, **kwargs)


async def failure(image: str, **kwargs: Any) -> ImageConfigUnavailable:
    with pytest.raises(ImageConfigUnavailable) as caught:
        await lookup(image, **kwargs)
    error = caught.value
    assert isinstance(error, TemporaryError)
    assert "\n" not in str(error) and image in str(error)
    return error


async def test_a_public_image_is_read_through_its_index(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("team/app", "v1", CONFIG, [b"layer one"])
    config = await lookup(f"{registry_sim.host}/team/app:v1")
    assert config == ImageConfig(
        entrypoint=["/usr/bin/tini", "--"],
        cmd=["python", "serve.py"],
        env=["PATH=/usr/local/bin:/usr/bin", "MODE=prod=yes"],
        working_dir="/app",
        user="1000:1000",
        digest=built.digest,
    )
    # ping-less: manifest 401 → token → index → amd64 manifest → config blob
    assert registry_sim.requests == {"manifest": 3, "token": 1, "blob": 1}


async def test_by_digest_and_by_tag_give_the_same_config(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("app", "latest", CONFIG)
    by_tag = await lookup(f"{registry_sim.host}/app")
    by_digest = await lookup(f"{registry_sim.host}/app@{built.digest}")
    assert by_tag == by_digest
    assert by_digest.digest == built.digest
    platform = built.manifests["linux/amd64"]
    assert (await lookup(f"{registry_sim.host}/app@{platform}")).digest == platform


async def test_an_image_without_an_index_and_with_nothing_set(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("scratch", "1", {"config": None}, index=False)
    config = await lookup(f"{registry_sim.host}/scratch:1")
    assert config == ImageConfig([], [], [], "", "", built.digest)
    registry_sim.add_image("partial", "1", {"config": {"Cmd": ["sh"], "Env": None}})
    partial = await lookup(f"{registry_sim.host}/partial:1")
    assert (partial.cmd, partial.entrypoint, partial.env) == (["sh"], [], [])


async def test_blobs_behind_a_redirect_are_followed(
    registry_sim_factory: RegistrySimFactory,
) -> None:
    sim = await registry_sim_factory(redirect_blobs=True)
    sim.add_image("app", "1", CONFIG)
    assert (await lookup(f"{sim.host}/app:1")).cmd == ["python", "serve.py"]


async def test_a_private_image_needs_the_right_credentials(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("secret/app", "1", CONFIG, private=True)
    image = f"{registry_sim.host}/secret/app:1"
    right = {registry_sim.host: (USER, PASSWORD)}
    assert (await lookup(image, credentials=right)).user == "1000:1000"
    # keyed as a docker config may key it
    assert await lookup(image, credentials={f"http://{registry_sim.host}/v2/": (USER, PASSWORD)})

    wrong = await failure(image, credentials={registry_sim.host: (USER, "nope")})
    assert wrong.reason == IMAGE_UNAUTHORIZED and wrong.status == 401
    assert "refused" in str(wrong) and "nope" not in str(wrong)

    none = await failure(image)
    assert none.reason == IMAGE_UNAUTHORIZED
    assert f"no pull secret has credentials for {registry_sim.host}" in str(none)

    other_registry = await failure(image, credentials={"ghcr.io": (USER, PASSWORD)})
    assert other_registry.reason == IMAGE_UNAUTHORIZED


async def test_basic_auth_registries_are_supported(
    registry_sim_factory: RegistrySimFactory,
) -> None:
    sim = await registry_sim_factory(auth="basic")
    sim.add_image("private", "1", CONFIG, private=True)
    image = f"{sim.host}/private:1"
    assert (await lookup(image, credentials={sim.host: (USER, PASSWORD)})).working_dir == "/app"
    assert (await failure(image)).reason == IMAGE_UNAUTHORIZED
    bad = await failure(image, credentials={sim.host: (USER, "wrong")})
    assert bad.reason == IMAGE_UNAUTHORIZED


async def test_unknown_tags_and_repositories_are_not_found(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    tag = await failure(f"{registry_sim.host}/app:2")
    assert tag.reason == IMAGE_NOT_FOUND and tag.status == 404
    assert "MANIFEST_UNKNOWN" in str(tag)
    repo = await failure(f"{registry_sim.host}/nothing:1")
    assert repo.reason == IMAGE_NOT_FOUND and "NAME_UNKNOWN" in str(repo)


async def test_an_index_without_linux_amd64_names_what_it_has(
    registry_sim: RegistrySim,
) -> None:
    registry_sim.add_image("arm", "1", CONFIG, platforms=["linux/arm64", "linux/ppc64le"])
    error = await failure(f"{registry_sim.host}/arm:1")
    assert error.reason == IMAGE_PLATFORM_UNSUPPORTED
    assert "no linux/amd64" in str(error) and "linux/arm64, linux/ppc64le" in str(error)


async def test_a_config_that_does_not_match_its_digest_is_refused(
    registry_sim: RegistrySim,
) -> None:
    built = registry_sim.add_image("app", "1", CONFIG)
    registry_sim.tamper_blob(built.configs["linux/amd64"], b'{"config": {"Cmd": ["evil"]}}')
    error = await failure(f"{registry_sim.host}/app:1")
    assert error.reason == IMAGE_INVALID
    assert "config blob does not match its digest" in str(error)


async def test_a_manifest_that_does_not_match_the_pinned_digest_is_refused(
    registry_sim: RegistrySim,
) -> None:
    built = registry_sim.add_image("app", "1", CONFIG)
    other = "sha256:" + "0" * 64
    registry_sim.add_image("app", "2", CONFIG)
    # serve the index's bytes under another digest, as a lying registry would
    repo = registry_sim._repos["app"]
    repo.documents[other] = repo.documents[built.digest]
    error = await failure(f"{registry_sim.host}/app@{other}")
    assert error.reason == IMAGE_INVALID and "does not match its digest" in str(error)


async def test_a_registry_that_is_down_is_unavailable(registry_sim: RegistrySim) -> None:
    with socket.socket() as probe:  # a port with nobody listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = await failure(f"127.0.0.1:{port}/app:1")
    assert refused.reason == REGISTRY_UNAVAILABLE and "ConnectError" in str(refused)

    registry_sim.add_image("app", "1", CONFIG)
    registry_sim.stop()
    await trio.sleep(0.05)
    stopped = await failure(f"{registry_sim.host}/app:1")
    assert stopped.reason == REGISTRY_UNAVAILABLE


async def test_a_registry_answering_503_is_unavailable(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    registry_sim.faults.status = 503
    error = await failure(f"{registry_sim.host}/app:1")
    assert error.reason == REGISTRY_UNAVAILABLE and error.status == 503
    registry_sim.faults.status = None
    assert (await lookup(f"{registry_sim.host}/app:1")).cmd == ["python", "serve.py"]


async def test_a_slow_registry_is_given_up_on(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    registry_sim.faults.latency = 1.0
    async with RegistryClient(total_timeout=0.2) as client:
        with pytest.raises(ImageConfigUnavailable) as caught:
            await client.image_config(f"{registry_sim.host}/app:1")
    assert caught.value.reason == REGISTRY_UNAVAILABLE and "within 0.2 s" in str(caught.value)


async def test_the_cache_answers_repeats_without_a_request(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("app", "1", CONFIG)
    image = f"{registry_sim.host}/app:1"
    async with RegistryClient() as client:
        first = await client.image_config(image)
        asked = sum(registry_sim.requests.values())
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(client.image_config, image)
        assert await client.image_config(image) == first
        assert await client.image_config(f"{registry_sim.host}/app@{built.digest}") == first
        assert sum(registry_sim.requests.values()) == asked


async def test_concurrent_first_lookups_make_one_set_of_requests(
    registry_sim: RegistrySim,
) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    registry_sim.faults.latency = 0.02
    async with RegistryClient() as client, trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(client.image_config, f"{registry_sim.host}/app:1")
    assert registry_sim.requests == {"manifest": 3, "token": 1, "blob": 1}


async def test_an_expired_tag_is_revalidated_with_one_head(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    image = f"{registry_sim.host}/app:1"
    now = [0.0]
    async with RegistryClient(tag_ttl=10.0, clock=lambda: now[0]) as client:
        await client.image_config(image)
        registry_sim.requests.clear()
        now[0] = 11.0
        assert (await client.image_config(image)).cmd == ["python", "serve.py"]
        assert registry_sim.requests == {"manifest": 2, "token": 1}  # 401, then the HEAD
        registry_sim.add_image("app", "1", {"config": {"Cmd": ["new"]}})  # the tag moves
        now[0] = 22.0
        assert (await client.image_config(image)).cmd == ["new"]


async def test_cached_private_configs_are_not_handed_to_others(
    registry_sim: RegistrySim,
) -> None:
    registry_sim.add_image("secret", "1", CONFIG, private=True)
    image = f"{registry_sim.host}/secret:1"
    async with RegistryClient() as client:
        await client.image_config(image, credentials={registry_sim.host: (USER, PASSWORD)})
        with pytest.raises(ImageConfigUnavailable):
            await client.image_config(image)


async def test_the_one_off_function(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("app", "1", CONFIG)
    assert (await image_config(f"{registry_sim.host}/app:1")).working_dir == "/app"
    async with RegistryClient() as client:
        config = await image_config(f"{registry_sim.host}/app:1", client=client)
    assert config.user == "1000:1000"
