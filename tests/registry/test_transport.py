"""Who is sent what: https for every registry off loopback, no plain HTTP hop ever leaving
the machine (realms, redirects), ``Authorization`` kept to the registry's origin, and no
credential or token in a log line. Off-loopback registries are answered by an
``httpx.MockTransport`` that records each request, so no traffic leaves the machine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from loguru import logger

from tests.plugins.registry_sim import PASSWORD, USER
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.registry import (
    REGISTRY_UNAVAILABLE,
    ImageConfigUnavailable,
    RegistryClient,
    base_url,
)

CONFIG = json.dumps({"config": {"Cmd": ["run"]}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "x", "digest": CONFIG_DIGEST, "size": len(CONFIG)},
        "layers": [],
    }
).encode()
TOKEN = "mock-bearer-token-123456"


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ("ghcr.io", "https://ghcr.io"),
        ("registry-1.docker.io", "https://registry-1.docker.io"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("10.0.0.1:5000", "https://10.0.0.1:5000"),
        ("localhost.example.com", "https://localhost.example.com"),
        ("127.0.0.1.nip.io:5000", "https://127.0.0.1.nip.io:5000"),
        ("localhost", "http://localhost"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.8.9.10", "http://127.8.9.10"),
        ("[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_plain_http_only_for_loopback(registry: str, url: str) -> None:
    assert base_url(registry) == url


class Recorder:
    """A registry at ``https://reg.example`` with a token realm and blob storage elsewhere."""

    def __init__(self, *, realm: str = "https://auth.example/token", storage: str = "") -> None:
        self.realm = realm
        self.storage = storage
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "auth.example" or request.url.path == "/token":
            return httpx.Response(200, json={"token": TOKEN})
        if request.url.host == "storage.example":
            return httpx.Response(200, content=CONFIG)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="{self.realm}",service="reg",scope="repository:app:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if "/manifests/" in request.url.path:
            return httpx.Response(200, content=MANIFEST)
        if self.storage:
            return httpx.Response(307, headers={"Location": f"{self.storage}/blob?sig=1"})
        return httpx.Response(200, content=CONFIG)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + repr(m.record["extra"])), level="DEBUG")
    yield lines
    logger.remove(sink)


async def test_an_off_loopback_registry_is_asked_over_https_only(logs: list[str]) -> None:
    recorder = Recorder(storage="https://storage.example")
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    async with RegistryClient(http=http) as client:
        config = await client.image_config(
            "reg.example/app:1", credentials={"reg.example": (USER, PASSWORD)}
        )
    await http.aclose()
    assert config.cmd == ["run"]
    assert [(r.url.scheme, r.url.host) for r in recorder.seen] == [
        ("https", "reg.example"),
        ("https", "auth.example"),
        ("https", "reg.example"),
        ("https", "reg.example"),
        ("https", "storage.example"),
    ]
    token_request, storage_request = recorder.seen[1], recorder.seen[-1]
    assert token_request.url.params["scope"] == "repository:app:pull"
    assert token_request.headers["authorization"].startswith("Basic ")
    assert "authorization" not in storage_request.headers  # never sent off the origin
    text = "\n".join(logs)
    assert "registry request" in text
    assert PASSWORD not in text and TOKEN not in text


@pytest.mark.parametrize(
    ("realm", "storage"),
    [
        ("http://auth.example/token", ""),
        ("https://auth.example/token", "http://storage.example"),
        ("ftp://auth.example/token", ""),
    ],
)
async def test_no_plain_http_hop_leaves_the_machine(realm: str, storage: str) -> None:
    recorder = Recorder(realm=realm, storage=storage)
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    async with RegistryClient(http=http) as client:
        with pytest.raises(ImageConfigUnavailable) as caught:
            await client.image_config("reg.example/app:1")
    await http.aclose()
    assert caught.value.reason == REGISTRY_UNAVAILABLE
    assert "only https leaves this machine" in str(caught.value)
    assert all(r.url.scheme == "https" for r in recorder.seen)


async def test_the_simulator_is_reached_over_plain_http(
    registry_sim: RegistrySim, logs: list[str]
) -> None:
    registry_sim.add_image("app", "1", {"config": {"Cmd": ["x"]}}, private=True)
    async with RegistryClient() as client:
        await client.image_config(
            f"{registry_sim.host}/app:1", credentials={registry_sim.host: (USER, PASSWORD)}
        )
    assert base_url(registry_sim.host).startswith("http://127.0.0.1:")
    assert PASSWORD not in "\n".join(logs)
