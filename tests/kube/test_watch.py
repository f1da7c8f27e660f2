"""``watch_pods``: list → SYNCED → watch, bookmarks, 410 (both forms) → relist with tombstones,
backoff on other failures, the inactivity deadline; scripted bodies first, then the stand-in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.lowlevel
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeForbidden
from vk_trio.kube.watch import PodEvent, watch_pods
from vk_trio.retry import NO_RETRY, Backoff

Reply = Callable[[httpx.Request], httpx.Response]


def pod(name: str, rv: str, uid: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid or f"uid-{name}",
            "resourceVersion": rv,
        },
        "spec": {"nodeName": "vk"},
    }


def pod_list(rv: str, *pods: dict[str, Any], cont: str = "") -> Reply:
    body = {"kind": "PodList", "metadata": {"resourceVersion": rv, "continue": cont}, "items": pods}
    return lambda request: httpx.Response(200, json=body)


class Lines(httpx.AsyncByteStream):
    """A chunked body: each event is sent split in two chunks; optionally hangs at the end."""

    def __init__(self, events: list[dict[str, Any]], *, hang: bool = False) -> None:
        self.events = events
        self.hang = hang

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            data = msgspec.json.encode(event) + b"\n"
            yield data[:7]
            yield data[7:]
        if self.hang:
            await trio.sleep_forever()


def stream(*events: dict[str, Any], hang: bool = False) -> Reply:
    return lambda request: httpx.Response(200, stream=Lines(list(events), hang=hang))


def status(code: int, reason: str) -> Reply:
    body = {"kind": "Status", "code": code, "reason": reason, "message": reason}
    return lambda request: httpx.Response(code, json=body)


def expired() -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
    }


class Script:
    """Answers requests in order and records them; running out fails the test loudly."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.replies, f"unexpected request {request.url}"
        return self.replies.pop(0)(request)

    def params(self, index: int) -> dict[str, str]:
        return dict(self.requests[index].url.params)

    def client(self) -> KubeClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self), base_url="http://kube")
        return KubeClient(http, retry=NO_RETRY)


def names(events: list[PodEvent]) -> list[str]:
    return [f"{e.type} {e.pod.metadata.name}" if e.pod else e.type for e in events]


async def take(client: KubeClient, count: int, **kwargs: Any) -> list[PodEvent]:
    events: list[PodEvent] = []
    async with aclosing(watch_pods(client, node_name="vk", **kwargs)) as stream_:
        async for event in stream_:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_list_watch_expire_relist_tombstones() -> None:
    script = Script(
        pod_list("5", pod("a", "3"), cont="tok"),
        pod_list("10", pod("b", "4"), pod("c", "5")),
        stream(
            {"type": "MODIFIED", "object": pod("a", "11")},
            {"type": "DELETED", "object": pod("b", "12")},
            {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "20"}}},
            expired(),
        ),
        pod_list("30", pod("a", "11")),
        stream({"type": "ADDED", "object": pod("d", "31")}),
        stream({"type": "MODIFIED", "object": pod("d", "32")}),
    )
    events = await take(script.client(), 11)
    assert names(events) == [
        "ADDED a",
        "ADDED b",
        "ADDED c",
        "SYNCED",
        "MODIFIED a",
        "DELETED b",
        # 410 as an ERROR event: relist; c vanished meanwhile → tombstone with its last state.
        "ADDED a",
        "DELETED c",
        "SYNCED",
        "ADDED d",
        "MODIFIED d",
    ]
    tombstone = events[7]
    assert tombstone.pod is not None
    assert tombstone.pod.metadata.resource_version == "5"

    first_list, second_page = script.params(0), script.params(1)
    assert first_list["fieldSelector"] == "spec.nodeName=vk"
    assert first_list["limit"] == "500"
    assert "continue" not in first_list
    assert second_page["continue"] == "tok"
    watch = script.params(2)
    assert watch["watch"] == "1"
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["resourceVersion"] == "10"
    assert 300 <= int(watch["timeoutSeconds"]) <= 600
    assert "continue" not in script.params(3)
    assert script.params(4)["resourceVersion"] == "30"
    # After a normal end of stream: re-watch from the last event's RV, no relist.
    assert script.params(5)["resourceVersion"] == "31"


async def test_bookmark_rv_is_used_for_the_next_watch() -> None:
    script = Script(
        pod_list("10"),
        stream({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "44"}}}),
        stream({"type": "ADDED", "object": pod("x", "45")}),
    )
    events = await take(script.client(), 2)
    assert names(events) == ["SYNCED", "ADDED x"]
    assert script.params(2)["resourceVersion"] == "44"


async def test_http_410_on_watch_relists_without_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(
        pod_list("10", pod("a", "1")),
        status(410, "Expired"),
        pod_list("50"),
        stream({"type": "ADDED", "object": pod("z", "51")}),
    )
    start = trio.current_time()
    events = await take(script.client(), 5)
    assert names(events) == ["ADDED a", "SYNCED", "DELETED a", "SYNCED", "ADDED z"]
    assert trio.current_time() == start


async def test_other_failures_back_off_then_relist(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    error_event = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "X"}}
    script = Script(
        pod_list("10"),
        broken,
        stream(error_event),
        status(503, "ServiceUnavailable"),
        pod_list("60"),  # the third failure in a row relists
        stream({"type": "ADDED", "object": pod("y", "61")}),
    )
    start = trio.current_time()
    events = await take(script.client(), 3, backoff=Backoff(1.0, 4.0))
    assert names(events) == ["SYNCED", "SYNCED", "ADDED y"]
    assert trio.current_time() - start == pytest.approx(1.0 + 2.0 + 4.0)
    assert script.params(2)["resourceVersion"] == "10"
    assert script.params(3)["resourceVersion"] == "10"


async def test_inactive_stream_is_reopened(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(
        pod_list("10"),
        stream({"type": "ADDED", "object": pod("a", "11")}, hang=True),
        stream({"type": "MODIFIED", "object": pod("a", "12")}),
    )
    start = trio.current_time()
    events = await take(script.client(), 3, inactivity_timeout=70.0)
    assert names(events) == ["SYNCED", "ADDED a", "MODIFIED a"]
    assert trio.current_time() - start == pytest.approx(70.0)
    assert script.params(2)["resourceVersion"] == "11"


async def test_forbidden_escalates() -> None:
    script = Script(status(403, "Forbidden"))
    with pytest.raises(KubeForbidden):
        await take(script.client(), 1)


async def test_undecodable_lines_are_skipped() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        body = b'not json\n{"type":"ADDED","object":{"metadata":7}}\n'
        body += msgspec.json.encode({"type": "ADDED", "object": pod("ok", "2")}) + b"\n"
        return httpx.Response(200, content=body)

    script = Script(pod_list("1"), garbage)
    events = await take(script.client(), 2)
    assert names(events) == ["SYNCED", "ADDED ok"]


def broken_pod(name: str, rv: str) -> dict[str, Any]:
    """A pod the models cannot decode (a container without a name), identity intact."""
    return {**pod(name, rv), "spec": {"nodeName": "vk", "containers": [{"image": 5}]}}


async def test_an_undecodable_pod_in_a_list_hides_no_other_pod() -> None:
    script = Script(pod_list("5", broken_pod("bad", "3"), pod("good", "4")), stream())
    events = await take(script.client(), 2)
    assert names(events) == ["ADDED good", "SYNCED"]


async def test_a_known_pod_that_turns_undecodable_is_not_reported_deleted() -> None:
    """A tombstone would destroy its instance; the last decodable state is kept instead."""
    script = Script(
        pod_list("5", pod("a", "3")),
        stream(
            {"type": "MODIFIED", "object": broken_pod("a", "6")},
            {"type": "BOOKMARK", "object": {"metadata": []}},
            expired(),
        ),
        pod_list("9", broken_pod("a", "7")),
        stream({"type": "ADDED", "object": pod("b", "10")}),
    )
    events = await take(script.client(), 5)
    assert names(events) == ["ADDED a", "SYNCED", "ADDED a", "SYNCED", "ADDED b"]
    assert events[2].pod is not None and events[2].pod.metadata.resource_version == "3"


async def test_an_undecodable_deletion_still_deletes_the_known_pod() -> None:
    script = Script(
        pod_list("5", pod("a", "3")),
        stream(
            {"type": "DELETED", "object": broken_pod("nobody", "5")},
            {"type": "DELETED", "object": broken_pod("a", "6")},
        ),
        stream({"type": "ADDED", "object": pod("b", "10")}),
    )
    events = await take(script.client(), 4)
    assert names(events) == ["ADDED a", "SYNCED", "DELETED a", "ADDED b"]
    assert script.params(2)["resourceVersion"] == "6"


async def test_an_unreadable_error_event_is_a_watch_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(
        pod_list("5"),
        stream({"type": "ERROR", "object": {"code": "x"}}),
        stream({"type": "ADDED", "object": pod("b", "10")}),
    )
    events = await take(script.client(), 2)
    assert names(events) == ["SYNCED", "ADDED b"]
    assert script.params(2)["resourceVersion"] == "5"


# ----- against the API stand-in ------------------------------------------------------------


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


def sim_pod(name: str, node: str = "vk") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1"}]},
    }


class Collector:
    """Runs ``watch_pods`` in the test's nursery and keeps every event it yields."""

    def __init__(self) -> None:
        self.events: list[PodEvent] = []
        self.changed = trio.Event()

    async def run(self, client: KubeClient) -> None:
        async with aclosing(watch_pods(client, node_name="vk")) as events:
            async for event in events:
                self.events.append(event)
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(self, count: int) -> list[str]:
        with trio.fail_after(5):
            while len(self.events) < count:
                await self.changed.wait()
        return names(self.events)


async def test_watch_against_the_stand_in(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    kube_sim.create(sim_pod("a"))
    kube_sim.create(sim_pod("elsewhere", node="other-node"))
    collector = Collector()
    nursery.start_soon(collector.run, kube)
    assert await collector.wait_for(2) == ["ADDED a", "SYNCED"]

    kube_sim.create(sim_pod("b"))
    assert (await collector.wait_for(3))[2] == "ADDED b"
    kube_sim.patch("pods", "default", "a", {"metadata": {"labels": {"x": "1"}}})
    assert (await collector.wait_for(4))[3] == "MODIFIED a"
    kube_sim.delete("pods", "default", "b", grace_seconds=0)
    assert (await collector.wait_for(5))[4] == "DELETED b"
    assert collector.events[3].pod is not None
    assert collector.events[3].pod.metadata.labels == {"x": "1"}

    # A change we do not see (another node's pod) moves the cluster past our last RV, the
    # history is compacted and every stream cut, then changes while nobody watches: the
    # re-watch gets 410 Expired, the relist brings c and a tombstone for a.
    kube_sim.create(sim_pod("unseen", node="other-node"))
    kube_sim.compact()
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda s: s.watchers == 1)
    kube_sim.close_watches()
    a_uid = collector.events[0].pod.uid if collector.events[0].pod else ""
    kube_sim.delete("pods", "default", "a", grace_seconds=0)
    kube_sim.create(sim_pod("c"))
    assert (await collector.wait_for(8))[5:] == ["ADDED c", "DELETED a", "SYNCED"]
    tombstone = collector.events[6].pod
    assert tombstone is not None
    assert tombstone.uid == a_uid
    assert tombstone.metadata.labels == {"x": "1"}  # the last state we saw

    kube_sim.create(sim_pod("d"))
    assert (await collector.wait_for(9))[8] == "ADDED d"
    added = [n for n in names(collector.events) if n.startswith("ADDED")]
    assert added == ["ADDED a", "ADDED b", "ADDED c", "ADDED d"]
    assert all(e.pod is None or e.pod.spec.node_name == "vk" for e in collector.events)


async def test_watch_resumes_without_relist_after_stream_end(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    collector = Collector()
    nursery.start_soon(collector.run, kube)
    assert await collector.wait_for(1) == ["SYNCED"]
    lists = kube_sim.requests["GET /api/v1/pods"]
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda s: s.watchers == 1)
    kube_sim.close_watches()  # an apiserver restart, with history intact
    kube_sim.create(sim_pod("late"))
    assert (await collector.wait_for(2))[1] == "ADDED late"
    assert kube_sim.requests["GET /api/v1/pods"] == lists
    assert kube_sim.requests["WATCH /api/v1/pods"] == 2


# ----- property: whatever happens, the consumer's view converges to the cluster's ----------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["create", "delete", "label"]), st.sampled_from("abcd")),
        st.tuples(st.sampled_from(["expire", "restart", "settle", "settle"]), st.just("")),
    ),
    max_size=16,
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(operations=OPERATIONS)
@example(operations=[("create", "a"), ("settle", ""), ("expire", ""), ("delete", "a")])
@example(operations=[("create", "a"), ("settle", ""), ("restart", ""), ("label", "a")])
async def test_consumer_view_converges(operations: list[tuple[str, str]]) -> None:
    """Applying the yielded events (ADDED/MODIFIED = put, DELETED = remove) always ends with
    exactly the cluster's pods for this node, at their current resourceVersion, whatever mix
    of changes, stream cuts and history compactions happened while watching."""
    sim = KubeSim(bookmark_interval=0.2)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(sim.serve)
        client = KubeClient(httpx.AsyncClient(base_url=url))
        view: dict[str, str] = {}
        changed = trio.Event()

        async def consume() -> None:
            nonlocal changed
            async with aclosing(
                watch_pods(client, node_name="vk", backoff=Backoff(0.01, 0.01))
            ) as events:
                async for event in events:
                    if event.pod is None:
                        continue
                    if event.type == "DELETED":
                        view.pop(event.pod.uid, None)
                    else:
                        view[event.pod.uid] = event.pod.metadata.resource_version
                    changed.set()
                    changed = trio.Event()

        def truth() -> dict[str, str]:
            return {
                p["metadata"]["uid"]: p["metadata"]["resourceVersion"]
                for p in sim.list("pods", "default")
                if p["spec"]["nodeName"] == "vk"
            }

        async def converged() -> None:
            with trio.fail_after(5):
                while view != truth():
                    await changed.wait()

        nursery.start_soon(consume)
        await converged()
        for operation, name in operations:
            exists = sim.get("pods", "default", name) is not None if name else False
            if operation == "create" and not exists:
                sim.create(sim_pod(name))
            elif operation == "delete" and exists:
                sim.delete("pods", "default", name, grace_seconds=0)
            elif operation == "label" and exists:
                sim.patch(
                    "pods", "default", name, {"metadata": {"labels": {"n": sim.resource_version}}}
                )
            elif operation == "expire":
                sim.create(sim_pod(f"other-{sim.resource_version}", node="elsewhere"))
                sim.compact()
                sim.close_watches()
            elif operation == "restart":
                sim.close_watches()
            elif operation == "settle":
                await converged()
            await trio.lowlevel.checkpoint()
        await converged()
        nursery.cancel_scope.cancel()
