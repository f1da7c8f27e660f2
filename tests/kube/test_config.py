"""``load_config``: kubeconfig flavours, in-cluster service account, bearer auth on the wire."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ssl
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import (
    ClusterConfig,
    ConfigError,
    in_cluster_config,
    load_config,
    make_http_client,
)
from vk_trio.kube.errors import KubeUnavailable
from vk_trio.retry import NO_RETRY


def write_kubeconfig(path: Path, *, server: str, user: dict[str, Any], namespace: str) -> None:
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


# ----- TLS: verification on, CA from the config, client certificates, tls-server-name -----


@dataclass
class Pki:
    ca_pem: str
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _issue(
    subject: str, *, issuer: tuple[Any, Any] | None, dns: str | None = None
) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization

    def write(name: str, cert: Any, key: Any) -> tuple[Path, Path]:
        cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    ca = _issue("test-ca", issuer=None)
    server_cert, server_key = write("server", *_issue("kube", issuer=ca, dns="kube.test"))
    client_cert, client_key = write("client", *_issue("vk-trio", issuer=ca))
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM).decode()
    return Pki(ca_pem, server_cert, server_key, client_cert, client_key)


async def serve_tls(nursery: trio.Nursery, pki: Pki, seen: list[str]) -> int:
    """A one-answer HTTPS server that requires a client certificate signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=pki.ca_pem)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            peer = stream.getpeercert()
            seen.append(str(dict(x[0] for x in peer["subject"])["commonName"]))
            await stream.receive_some(65536)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 11\r\nConnection: close\r\n\r\n{"ok":true}'
            )
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a client that rejected our certificate

    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, handler, 0, context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_tls_with_ca_client_cert_and_server_name(pki: Pki, nursery: trio.Nursery) -> None:
    seen: list[str] = []
    port = await serve_tls(nursery, pki, seen)
    config = ClusterConfig(
        server=f"https://127.0.0.1:{port}",
        ca_data=pki.ca_pem,
        tls_server_name="kube.test",
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
    )
    async with KubeClient.from_config(config) as client:
        assert await client.request("GET", "/version") == {"ok": True}
    assert seen == ["vk-trio"]


@pytest.mark.parametrize("missing", ["ca", "server_name"])
async def test_tls_verification_is_on(pki: Pki, nursery: trio.Nursery, missing: str) -> None:
    port = await serve_tls(nursery, pki, [])
    config = ClusterConfig(
        server=f"https://127.0.0.1:{port}",
        ca_data=None if missing == "ca" else pki.ca_pem,
        tls_server_name=None if missing == "server_name" else "kube.test",
        client_cert_file=str(pki.client_cert),
        client_key_file=str(pki.client_key),
    )
    async with KubeClient.from_config(config, retry=NO_RETRY) as client:
        with pytest.raises(KubeUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request("GET", "/version")
