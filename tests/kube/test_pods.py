"""Pod verbs: uid preconditions, 404/409 meaning "gone", patch content types; then the stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
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
from vk_trio.retry import NO_RETRY

POD = Pod(metadata=ObjectMeta(name="web", namespace="team", uid="uid-1"))


def pod_json(uid: str = "uid-1", **status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "web", "namespace": "team", "uid": uid},
        "status": {"phase": "Pending", **status},
    }


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> KubeClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kube")
    return KubeClient(http, retry=NO_RETRY)


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


# ----- against the API stand-in ------------------------------------------------------------


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


def make_pod(sim: KubeSim, name: str = "web", node: str | None = "vk") -> Pod:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1"}]}
    if node is not None:
        spec["nodeName"] = node
    created = sim.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )
    return msgspec.convert(created, Pod)


async def test_status_patch_keeps_pod_scheduled(kube: KubeClient, kube_sim: KubeSim) -> None:
    make_pod(kube_sim, node=None)
    pod = msgspec.convert(kube_sim.bind("default", "web", "vk"), Pod)  # the scheduler's condition
    status = {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": None}],
        "containerStatuses": [
            {
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "image": "busybox:1",
                "imageID": "",
                "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}},
            }
        ],
    }
    updated = await patch_pod_status(kube, pod, status)
    assert updated is not None
    assert updated.status.phase == "Running"
    assert updated.status.pod_ip == "10.0.0.7"
    assert {c.type for c in updated.status.conditions} == {"PodScheduled", "Ready"}
    stored = kube_sim.get("pods", "default", "web")
    assert stored is not None
    assert stored["status"]["qosClass"]  # untouched server-owned field
    assert stored["status"]["containerStatuses"][0]["state"]["running"]


async def test_patches_on_a_replaced_pod_are_dropped(kube: KubeClient, kube_sim: KubeSim) -> None:
    old = make_pod(kube_sim)
    kube_sim.delete("pods", "default", "web", grace_seconds=0)
    assert await patch_pod_status(kube, old, {"phase": "Failed"}) is None
    new = make_pod(kube_sim)
    assert await patch_pod_status(kube, old, {"phase": "Failed"}) is None
    assert await patch_pod_annotations(kube, old, {"a": "b"}) is None
    stored = kube_sim.get("pods", "default", "web")
    assert stored is not None
    assert stored["metadata"]["uid"] == new.uid
    assert stored["status"]["phase"] == "Pending"
    assert "a" not in (stored["metadata"].get("annotations") or {})


async def test_annotations_set_and_delete(kube: KubeClient, kube_sim: KubeSim) -> None:
    pod = make_pod(kube_sim)
    updated = await patch_pod_annotations(kube, pod, {"vast.ai/instance": "42", "x": "1"})
    assert updated is not None
    assert updated.metadata.annotations == {"vast.ai/instance": "42", "x": "1"}
    updated = await patch_pod_annotations(kube, pod, {"x": None})
    assert updated is not None
    assert updated.metadata.annotations == {"vast.ai/instance": "42"}


async def test_delete_pod_spares_a_recreated_pod(kube: KubeClient, kube_sim: KubeSim) -> None:
    old = make_pod(kube_sim)
    kube_sim.delete("pods", "default", "web")  # graceful: only a deletionTimestamp
    terminating = await get_pod(kube, "default", "web")
    assert terminating is not None
    assert terminating.is_deleting
    await delete_pod(kube, old)  # the kubelet's final delete, grace 0
    assert kube_sim.get("pods", "default", "web") is None

    new = make_pod(kube_sim)
    await delete_pod(kube, old)  # uid precondition fails: 409 means done
    stored = kube_sim.get("pods", "default", "web")
    assert stored is not None
    assert stored["metadata"]["uid"] == new.uid
    await delete_pod(kube, new)
    await delete_pod(kube, new)  # already gone: 404 means done
    assert kube_sim.get("pods", "default", "web") is None


async def test_get_secret_and_config_map(kube: KubeClient, kube_sim: KubeSim) -> None:
    kube_sim.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}}
    )
    kube_sim.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    )
    secret = await get_secret(kube, "default", "s")
    assert secret is not None
    assert secret.data == {"k": "dg=="}
    config_map = await get_config_map(kube, "default", "c")
    assert config_map is not None
    assert config_map.data == {"a": "b"}
    assert await get_secret(kube, "default", "missing") is None
    assert await get_pod(kube, "nope", "missing") is None
