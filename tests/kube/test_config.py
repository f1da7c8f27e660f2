"""``load_config``: kubeconfig flavours, in-cluster service account, bearer auth on the wire."""

from __future__ import annotations

import base64
import datetime as dt
import stat
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import (
    ClusterConfig,
    ConfigError,
    in_cluster_config,
    load_config,
    make_http_client,
)
from vk_trio.sim.kube import KubeSim


def write_kubeconfig(path: Path, *, server: str, user: dict[str, object], namespace: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {
                        "name": "ctx",
                        "context": {"cluster": "c", "user": "u", "namespace": namespace},
                    },
                    {"name": "other", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "ctx",
            }
        )
    )


async def test_kubeconfig_with_static_token(tmp_path: Path) -> None:
    path = tmp_path / "config"
    write_kubeconfig(path, server="http://127.0.0.1:6443/", user={"token": "t0k3n"}, namespace="ns")
    config = await load_config(kubeconfig=str(path))
    assert config.server == "http://127.0.0.1:6443"
    assert config.token == "t0k3n"
    assert config.namespace == "ns"
    other = await load_config(kubeconfig=str(path), context="other")
    assert other.namespace == "default"


async def test_kubeconfig_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    write_kubeconfig(path, server="http://h:1", user={"token": "abc"}, namespace="x")
    monkeypatch.setenv("KUBECONFIG", str(path))
    config = await load_config()
    assert config.server == "http://h:1"


async def test_kubeconfig_exec_plugin(tmp_path: Path) -> None:
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        " 'kind': 'ExecCredential',"
        f" 'status': {{'token': 'from-exec', 'expirationTimestamp': '{expiry}'}}}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    path = tmp_path / "config"
    write_kubeconfig(path, server="http://h:1", user=user, namespace="x")
    config = await load_config(kubeconfig=str(path))
    assert config.token == "from-exec"
    assert config.token_provider is not None
    assert await config.token_provider() == "from-exec"


async def test_bad_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    write_kubeconfig(path, server="http://h:1", user={"token": "x"}, namespace="x")
    with pytest.raises(ConfigError, match="nope"):
        await load_config(kubeconfig=str(path), context="nope")


async def test_in_cluster_rereads_rotated_token(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "namespace").write_text("vk")
    (tmp_path / "ca.crt").write_text("not read until a client is built")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    config = await in_cluster_config(sa_dir=str(tmp_path), environ=env)
    assert config.server == "https://[fd00::1]:6443"
    assert config.namespace == "vk"
    assert config.ca_file == str(tmp_path / "ca.crt")
    assert config.token_provider is not None
    assert await config.token_provider() == "first"
    (tmp_path / "token").write_text("second")
    assert await config.token_provider() == "first"  # cached for a minute
    await trio.sleep(61)
    assert await config.token_provider() == "second"


async def test_not_in_cluster_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        await in_cluster_config(sa_dir=str(tmp_path), environ={})


async def test_http_client_sends_bearer_token_from_provider() -> None:
    tokens = iter(["one", "two"])

    async def provider() -> str | None:
        return next(tokens)

    config = ClusterConfig(server="http://kube", token="static", token_provider=provider)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={})

    async with make_http_client(config, timeout=httpx.Timeout(5)) as http:
        http._transport = httpx.MockTransport(handler)
        await http.get("/a")
        await http.get("/b")
    assert seen == ["Bearer one", "Bearer two"]


async def test_inline_cert_data_lands_in_private_files(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://kube:6443",
                            "certificate-authority-data": b64("CA PEM"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "client-certificate-data": b64("CERT PEM"),
                            "client-key-data": b64("KEY PEM"),
                        },
                    }
                ],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    config = await load_config(kubeconfig=str(path))
    assert config.verify
    assert config.token is None
    for name, content in (
        (config.ca_file, "CA PEM"),
        (config.client_cert_file, "CERT PEM"),
        (config.client_key_file, "KEY PEM"),
    ):
        assert name is not None
        assert await trio.Path(name).read_text() == content
        assert stat.S_IMODE((await trio.Path(name).stat()).st_mode) == 0o600


async def test_stand_in_kubeconfig_round_trip(kubeconfig: Path, kube_sim: KubeSim) -> None:
    config = await load_config(kubeconfig=str(kubeconfig))
    assert config.server == kube_sim.url.rstrip("/")
    assert config.token == "vk-trio-sim"
    async with KubeClient.from_config(config) as client:
        namespaces = await client.request("GET", "/api/v1/namespaces")
    assert "kube-node-lease" in {n["metadata"]["name"] for n in namespaces["items"]}
