"""Pod verbs: uid preconditions, 404/409 meaning "gone", patch content types; then the stand-in."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import msgspec
import pytest

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeForbidden
from vk_trio.kube.models import ObjectMeta, Pod
from vk_trio.kube.pods import (
    delete_pod,
    get_config_map,
    get_pod,
    get_secret,
    patch_pod_annotations,
    patch_pod_status,
)

POD = Pod(metadata=ObjectMeta(name="web", namespace="team", uid="uid-1"))


def pod_json(uid: str = "uid-1", **status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "web", "namespace": "team", "uid": uid},
        "status": {"phase": "Pending", **status},
    }


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> KubeClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kube")
    return KubeClient(http, backoffs=())


def not_found(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"kind": "Status", "code": 404, "reason": "NotFound"})


async def test_patch_status_sends_smp_with_uid() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pod_json(phase="Running"))

    pod = await patch_pod_status(client_for(handler), POD, {"phase": "Running"})
    assert pod is not None
    assert pod.status.phase == "Running"
    (request,) = seen
    assert request.method == "PATCH"
    assert request.url.path == "/api/v1/namespaces/team/pods/web/status"
    assert request.headers["content-type"] == "application/strategic-merge-patch+json"
    assert msgspec.json.decode(request.content) == {
        "metadata": {"uid": "uid-1"},
        "status": {"phase": "Running"},
    }


async def test_patch_returns_none_when_gone_or_replaced() -> None:
    assert await patch_pod_status(client_for(not_found), POD, {"phase": "Failed"}) is None

    def replaced(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            return httpx.Response(409, json={"kind": "Status", "message": "uid mismatch"})
        return httpx.Response(200, json=pod_json(uid="uid-2"))

    assert await patch_pod_annotations(client_for(replaced), POD, {"a": "b"}) is None


async def test_patch_retries_conflict_while_uid_matches() -> None:
    patches = 0

    def racy(request: httpx.Request) -> httpx.Response:
        nonlocal patches
        if request.method == "GET":
            return httpx.Response(200, json=pod_json())
        patches += 1
        if patches < 3:
            return httpx.Response(409, json={"kind": "Status", "message": "conflict"})
        return httpx.Response(200, json=pod_json())

    assert await patch_pod_status(client_for(racy), POD, {}) is not None
    assert patches == 3


async def test_patch_annotations_merge_patch_with_deletions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pod_json())

    await patch_pod_annotations(client_for(handler), POD, {"vast.ai/id": "42", "old": None})
    (request,) = seen
    assert request.url.path == "/api/v1/namespaces/team/pods/web"
    assert request.headers["content-type"] == "application/merge-patch+json"
    assert msgspec.json.decode(request.content) == {
        "metadata": {"uid": "uid-1", "annotations": {"vast.ai/id": "42", "old": None}}
    }


@pytest.mark.parametrize("code", [200, 404, 409])
async def test_delete_pod_is_done_on_404_and_409(code: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(code, json={"kind": "Status"})

    await delete_pod(client_for(handler), POD)
    (request,) = seen
    assert request.method == "DELETE"
    assert msgspec.json.decode(request.content) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "uid-1"},
    }


async def test_delete_pod_escalates_forbidden() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"kind": "Status", "message": "no"})

    with pytest.raises(KubeForbidden):
        await delete_pod(client_for(handler), POD)


async def test_getters_return_none_on_404() -> None:
    client = client_for(not_found)
    assert await get_pod(client, "team", "web") is None
    assert await get_secret(client, "team", "s") is None
    assert await get_config_map(client, "team", "c") is None

    def found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"metadata": {"name": "s"}, "data": {"k": "dg=="}})

    secret = await get_secret(client_for(found), "team", "s")
    assert secret is not None
    assert secret.data == {"k": "dg=="}
