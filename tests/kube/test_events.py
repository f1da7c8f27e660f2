"""``EventRecorder``: client-go style aggregation, never raising, scrubbing; then the stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.events import MESSAGE_MAX, EventRecorder
from vk_trio.kube.models import ObjectMeta, Pod
from vk_trio.logs import redact
from vk_trio.retry import NO_RETRY

POD = Pod(metadata=ObjectMeta(name="web", namespace="team", uid="uid-1", resource_version="7"))


def recorder(handler: Callable[[httpx.Request], httpx.Response]) -> EventRecorder:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kube")
    return EventRecorder(KubeClient(http, retry=NO_RETRY), host="vk-node")


async def test_first_emit_posts_then_repeats_patch_count() -> None:
    requests: list[tuple[str, str, dict[str, object]]] = []
    expired = False

    def handler(request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        requests.append((request.method, request.url.path, body))
        if request.method == "PATCH" and expired:
            return httpx.Response(404, json={"kind": "Status", "code": 404})
        return httpx.Response(201 if request.method == "POST" else 200, json=body)

    events = recorder(handler)
    await events.emit(POD, type="Warning", reason="NoOffers", message="nothing under $0.50")
    await events.emit(POD, type="Warning", reason="NoOffers", message="nothing under $0.50")
    await events.emit(POD, type="Warning", reason="NoOffers", message="nothing under $0.50")

    (method, path, created), (m2, p2, bump2), (m3, _, bump3) = requests
    assert (method, path) == ("POST", "/api/v1/namespaces/team/events")
    name = created["metadata"]["name"]  # type: ignore[index]
    assert name.startswith("web.")
    int(name.removeprefix("web."), 16)
    assert created["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "team",
        "name": "web",
        "uid": "uid-1",
        "resourceVersion": "7",
    }
    assert created["source"] == {"component": "vk-trio", "host": "vk-node"}
    assert created["count"] == 1
    assert created["type"] == "Warning"
    assert str(created["firstTimestamp"]).endswith("Z")
    assert len(str(created["firstTimestamp"])) == len("2026-01-02T03:04:05Z")
    assert (m2, p2) == ("PATCH", f"/api/v1/namespaces/team/events/{name}")
    assert bump2["count"] == 2
    assert m3 == "PATCH"
    assert bump3["count"] == 3

    # A different message is a different event.
    await events.emit(POD, type="Warning", reason="NoOffers", message="other")
    assert requests[-1][0] == "POST"

    # The aggregated event expired: the PATCH 404s and a new one is created.
    requests.clear()
    expired = True
    await events.emit(POD, type="Warning", reason="NoOffers", message="nothing under $0.50")
    assert [r[0] for r in requests] == ["PATCH", "POST"]
    assert requests[1][2]["count"] == 1


@pytest.mark.parametrize(
    "failure",
    [
        lambda r: httpx.Response(403, json={"kind": "Status", "message": "forbidden"}),
        lambda r: httpx.Response(500, text="boom"),
        lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
    ],
    ids=["403", "500", "connect"],
)
async def test_emit_never_raises(
    failure: Callable[[httpx.Request], httpx.Response], autojump_clock: trio.testing.MockClock
) -> None:
    events = recorder(failure)
    await events.emit(POD, type="Normal", reason="Pulled", message="ok")
    # A failed create is forgotten, so the next emit tries to create again.
    await events.emit(POD, type="Normal", reason="Pulled", message="ok")


async def test_emit_lets_cancellation_through() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    http = httpx.AsyncClient(transport=httpx.MockTransport(slow), base_url="http://kube")
    events = EventRecorder(KubeClient(http), host="n")
    with trio.move_on_after(0.05) as scope:
        await events.emit(POD, type="Normal", reason="X", message="y")
    assert scope.cancelled_caught


async def test_messages_are_scrubbed_and_truncated() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(msgspec.json.decode(request.content))
        return httpx.Response(201, json={})

    redact("sk-very-secret-token")
    events = recorder(handler)
    await events.emit(POD, type="Warning", reason="Bad", message="key sk-very-secret-token " * 200)
    message = str(bodies[0]["message"])
    assert "sk-very-secret-token" not in message
    assert "***" in message
    assert len(message) == MESSAGE_MAX


async def test_cache_is_bounded() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += request.method == "POST"
        return httpx.Response(201, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kube")
    events = EventRecorder(KubeClient(http), host="n", cache_size=2)
    for message in ("a", "b", "c", "a"):
        await events.emit(POD, type="Normal", reason="R", message=message)
    assert posts == 4  # "a" was evicted by "c", so it is created again


# ----- against the API stand-in ------------------------------------------------------------


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


async def test_events_aggregate_on_the_stand_in(kube: KubeClient, kube_sim: KubeSim) -> None:
    created = kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "vk", "containers": [{"name": "main", "image": "busybox:1"}]},
        }
    )
    pod = msgspec.convert(created, Pod)
    events = EventRecorder(kube, host="vk")
    await events.emit(pod, type="Warning", reason="NoOffers", message="no offer under $0.50/h")
    await events.emit(pod, type="Warning", reason="NoOffers", message="no offer under $0.50/h")
    await events.emit(pod, type="Normal", reason="Provisioning", message="renting offer 123")

    listed = await kube.request(
        "GET",
        "/api/v1/namespaces/default/events",
        params={"fieldSelector": f"involvedObject.uid={pod.uid}"},
    )
    by_reason = {e["reason"]: e for e in listed["items"]}
    assert set(by_reason) == {"NoOffers", "Provisioning"}
    no_offers = by_reason["NoOffers"]
    assert no_offers["count"] == 2
    assert no_offers["type"] == "Warning"
    assert no_offers["involvedObject"]["name"] == "web"
    assert no_offers["source"] == {"component": "vk-trio", "host": "vk"}
    assert no_offers["lastTimestamp"] >= no_offers["firstTimestamp"]
    assert by_reason["Provisioning"]["count"] == 1
