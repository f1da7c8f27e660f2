"""The API server's version (``GET /version``) and the kubelet version the node reports with
it: the server's minor, patch 0, vk-trio's version as the suffix; the default, said in the
log, when the server's version cannot be read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from loguru import logger

from vk_trio import __version__
from vk_trio.app import _kubelet_version
from vk_trio.devtools.sim.kube import SERVER_VERSION, KubeSim
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import ClusterConfig, load_config
from vk_trio.kube.version import (
    DEFAULT_KUBELET_VERSION,
    ServerVersion,
    get_server_version,
    kubelet_version,
)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (ServerVersion(major="1", minor="36", git_version="v1.36.2"), "v1.36.0"),
        (ServerVersion(major="1", minor="32+", git_version="v1.32.9-eks-1a2b3c"), "v1.32.0"),
        (ServerVersion(git_version="v1.34.1-gke.1200"), "v1.34.0"),
        (ServerVersion(major="1", minor=""), None),
        (ServerVersion(), None),
    ],
    ids=["plain", "managed-minor", "git-version-only", "no-minor", "nothing"],
)
def test_the_kubelet_version_is_the_servers_minor_at_patch_zero(
    server: ServerVersion, expected: str | None
) -> None:
    wanted = None if expected is None else f"{expected}-vk-trio-{__version__}"
    assert kubelet_version(server) == wanted


async def test_the_stand_in_serves_its_version(kube: KubeClient) -> None:
    server = await get_server_version(kube)
    assert (server.major, server.minor) == (SERVER_VERSION["major"], SERVER_VERSION["minor"])
    assert await _kubelet_version(kube) == (
        f"v{SERVER_VERSION['major']}.{SERVER_VERSION['minor']}.0-vk-trio-{__version__}"
    )


async def test_an_unreadable_version_falls_back_to_the_default_and_says_why(
    nursery: trio.Nursery, kube_sim: KubeSim
) -> None:
    async def no_version(request: Request) -> Response:
        if request.path == "/version":
            return Response.json({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)
        return await kube_sim.handle(request)

    url = await nursery.start(serve_http, no_version)
    said: list[str] = []
    sink = logger.add(lambda message: said.append(message.record["message"]), level="WARNING")
    try:
        async with KubeClient.from_config(ClusterConfig(server=url)) as kube:
            assert await _kubelet_version(kube) == DEFAULT_KUBELET_VERSION
    finally:
        logger.remove(sink)
    assert said == ["cannot read the API server's version; reporting the default kubelet version"]
