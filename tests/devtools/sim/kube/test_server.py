"""The Kubernetes API stand-in over real sockets: CRUD, selectors, watch, patch, deletion.

Scope: the API-server semantics the node relies on (kubelet-contract.md §1, §2, §7), checked
with a plain ``httpx.AsyncClient`` so that the wire format is what is tested. kubectl
compatibility is in ``test_kubectl.py``; the pure patch functions are covered at the end.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.kube import patch as kube_patch

PODS = "/api/v1/namespaces/default/pods"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def pod(name: str, node: str | None = "vk-node", **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


@pytest.fixture
async def client(kube_sim: KubeSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kube_sim.url, timeout=10) as http:
        yield http


async def read_events(
    http: httpx.AsyncClient, path: str, count: int, **params: str
) -> list[dict[str, Any]]:
    """Open a watch and return its first ``count`` events (fails the test after 5 s)."""
    events = []
    with trio.fail_after(5):
        async with http.stream("GET", path, params={"watch": "1", **params}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                events.append(json.loads(line))
                if len(events) == count:
                    break
    return events


async def test_create_get_list_with_selectors(client: httpx.AsyncClient) -> None:
    created = await client.post(PODS, json=pod("a", app="web", tier="front"))
    assert created.status_code == 201
    body = created.json()
    assert body["metadata"]["uid"] and body["metadata"]["creationTimestamp"].endswith("Z")
    assert body["status"]["phase"] == "Pending"
    assert body["status"]["qosClass"] == "BestEffort"
    assert body["spec"]["restartPolicy"] == "Always"
    assert body["spec"]["terminationGracePeriodSeconds"] == 30
    # Created with spec.nodeName: no scheduler ran, so a real server records no PodScheduled
    # (the kubelet adds it); a stand-in that invented one hid that the node must.
    assert "conditions" not in body["status"]
    await client.post(PODS, json=pod("b", node="other", app="db"))
    await client.post(PODS, json=pod("c", node=None, app="web", tier="back"))

    async def names(path: str = PODS, **params: str) -> list[str]:
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        return [item["metadata"]["name"] for item in response.json()["items"]]

    assert await names() == ["a", "b", "c"]
    assert await names("/api/v1/pods", fieldSelector="spec.nodeName=vk-node") == ["a"]
    assert await names(fieldSelector="spec.nodeName!=vk-node,metadata.name!=b") == ["c"]
    assert await names(labelSelector="app=web,tier!=back") == ["a"]
    assert await names(labelSelector="app in (db, web),!tier") == ["b"]
    assert await names(labelSelector="tier") == ["a", "c"]
    one = await client.get(f"{PODS}/a")
    assert one.json()["metadata"]["uid"] == body["metadata"]["uid"]


async def test_errors_have_the_status_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{PODS}/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    await client.post(PODS, json=pod("a"))
    again = await client.post(PODS, json=pod("a"))
    assert (again.status_code, again.json()["reason"]) == (409, "AlreadyExists")
    lease = await client.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/x")
    assert lease.json()["message"] == 'leases.coordination.k8s.io "x" not found'
    no_ns = await client.post("/api/v1/namespaces/ghost/pods", json=pod("a"))
    assert no_ns.json()["message"] == 'namespaces "ghost" not found'


async def test_resource_versions_increase_and_lists_carry_one(client: httpx.AsyncClient) -> None:
    first = (await client.post(PODS, json=pod("a"))).json()["metadata"]["resourceVersion"]
    second = (await client.post(PODS, json=pod("b"))).json()["metadata"]["resourceVersion"]
    assert int(second) == int(first) + 1
    listed = (await client.get(PODS)).json()
    assert listed["kind"] == "PodList"
    assert listed["metadata"]["resourceVersion"] == second
    assert "kind" not in listed["items"][0]  # as from a real server: only watch objects have it


async def test_list_pages_with_limit_and_continue(client: httpx.AsyncClient) -> None:
    for name in "abcde":
        await client.post(PODS, json=pod(name))
    seen, token = [], ""
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        page = (await client.get(PODS, params=params)).json()
        seen += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == list("abcde")


async def test_watch_from_rv_sees_changes_in_order_through_a_field_selector(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    await client.post(PODS, json=pod("before"))
    since = kube_sim.resource_version
    await client.post(PODS, json=pod("a"))
    await client.post(PODS, json=pod("elsewhere", node="other"))
    await client.patch(f"{PODS}/a", json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE)
    await client.patch(f"{PODS}/elsewhere", json={"spec": {"nodeName": "vk-node"}}, headers=MERGE)
    await client.patch(f"{PODS}/a", json={"spec": {"nodeName": "other"}}, headers=MERGE)
    await client.delete(f"{PODS}/elsewhere", params={"gracePeriodSeconds": "0"})
    events = await read_events(
        client, "/api/v1/pods", 5, resourceVersion=since, fieldSelector="spec.nodeName=vk-node"
    )
    summary = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert summary == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("ADDED", "elsewhere"),  # started matching
        ("DELETED", "a"),  # stopped matching: previous content, new resourceVersion
        ("DELETED", "elsewhere"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[-1] == int(kube_sim.resource_version)
    assert events[3]["object"]["spec"]["nodeName"] == "vk-node"


async def test_watch_without_rv_starts_with_synthetic_added_then_live(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    kube_sim.create(pod("old"))
    events: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            events.extend(await read_events(client, PODS, 2))

        nursery.start_soon(watch)
        await kube_sim.wait_until(lambda s: s.watchers == 1)
        kube_sim.create(pod("new"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]


async def test_watch_on_an_object_url_sees_only_that_object(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    since = kube_sim.resource_version
    kube_sim.create(pod("other"))
    kube_sim.create(pod("a"))
    [event] = await read_events(client, f"{PODS}/a", 1, resourceVersion=since)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "a")


async def test_bookmarks_carry_only_the_resource_version(kube_sim: KubeSim) -> None:
    kube_sim.bookmark_interval = 0.05
    kube_sim.create(pod("a"))
    async with httpx.AsyncClient(base_url=kube_sim.url) as http:
        events = await read_events(
            http, PODS, 2, resourceVersion=kube_sim.resource_version, allowWatchBookmarks="true"
        )
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert events[0]["object"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": kube_sim.resource_version},
    }


async def test_streaming_list_ends_initial_events_with_a_bookmark(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    kube_sim.create(pod("a"))
    rv = kube_sim.resource_version
    events = await read_events(
        client,
        PODS,
        2,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    )
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"] == {
        "resourceVersion": rv,
        "annotations": {"k8s.io/initial-events-end": "true"},
    }


async def test_watch_ends_at_timeout_seconds(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.get(PODS, params={"watch": "true", "timeoutSeconds": "1"})
    assert response.status_code == 200
    assert response.text == ""


async def test_compacted_history_gives_an_expired_error_event(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    await client.post(PODS, json=pod("a"))
    old = kube_sim.resource_version
    await client.post(PODS, json=pod("b"))
    kube_sim.compact()
    [event] = await read_events(client, PODS, 1, resourceVersion=old)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {old} (")
    assert (await client.get(PODS, params={"resourceVersion": old})).status_code == 200
    rv = kube_sim.resource_version
    assert await read_events(client, PODS, 0, resourceVersion=rv, timeoutSeconds="1") == []


async def test_history_window_is_bounded(nursery: trio.Nursery) -> None:
    sim = KubeSim(history=2)
    await nursery.start(sim.serve)
    first = sim.create(pod("a"))["metadata"]["resourceVersion"]
    for name in "bcd":
        sim.create(pod(name))
    async with httpx.AsyncClient(base_url=sim.url) as http:
        [event] = await read_events(http, PODS, 1, resourceVersion=first)
    assert event["object"]["code"] == 410


async def test_close_watches_ends_open_streams(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(client.get, PODS, params={"watch": "1"}))
        await kube_sim.wait_until(lambda s: s.watchers == 1)
        kube_sim.close_watches()
    assert kube_sim.watchers == 0


async def test_slow_watcher_is_cut_off(nursery: trio.Nursery) -> None:
    sim = KubeSim(watch_buffer=2)
    await nursery.start(sim.serve)
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        http.stream("GET", PODS, params={"watch": "1"}) as response,
    ):
        await sim.wait_until(lambda s: s.watchers == 1)
        for name in "abcdefgh":
            sim.create(pod(name))
        assert sim.watchers == 0
        lines = [line async for line in response.aiter_lines()]
    assert len(lines) <= 3  # the buffer, plus one the stream may already have been waiting for


async def test_put_with_stale_resource_version_conflicts(client: httpx.AsyncClient) -> None:
    created = (await client.post(PODS, json=pod("a"))).json()
    created["metadata"]["labels"] = {"v": "1"}
    assert (await client.put(f"{PODS}/a", json=created)).status_code == 200
    created["metadata"]["labels"] = {"v": "2"}
    stale = await client.put(f"{PODS}/a", json=created)
    assert (stale.status_code, stale.json()["reason"]) == (409, "Conflict")
    assert "the object has been modified" in stale.json()["message"]
    del created["metadata"]["resourceVersion"]
    unconditional = await client.put(f"{PODS}/a", json=created)
    assert unconditional.json()["metadata"]["labels"] == {"v": "2"}


async def test_strategic_merge_keeps_other_writers_conditions(client: httpx.AsyncClient) -> None:
    """The node's status patch must keep the scheduler's PodScheduled condition."""
    uid = (await client.post(PODS, json=pod("a", node=None))).json()["metadata"]["uid"]
    binding = {"metadata": {"name": "a"}, "target": {"kind": "Node", "name": "vk-node"}}
    assert (await client.post(f"{PODS}/a/binding", json=binding)).status_code == 201
    patch = {
        "metadata": {"uid": uid},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "main", "ready": True, "state": {"running": {}}}],
        },
    }
    result = await client.patch(f"{PODS}/a/status", json=patch, headers=SMP)
    assert result.status_code == 200, result.text
    conditions = {c["type"]: c["status"] for c in result.json()["status"]["conditions"]}
    assert conditions == {"PodScheduled": "True", "Ready": "True"}
    again = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    result = await client.patch(f"{PODS}/a/status", json=again, headers=SMP)
    conditions = {c["type"]: c["status"] for c in result.json()["status"]["conditions"]}
    assert conditions == {"PodScheduled": "True", "Ready": "False"}
    assert result.json()["status"]["qosClass"] == "BestEffort"
    wrong_uid = await client.patch(
        f"{PODS}/a/status", json={"metadata": {"uid": "someone-else"}}, headers=SMP
    )
    assert wrong_uid.status_code == 409


async def test_patch_with_stale_resource_version_conflicts(client: httpx.AsyncClient) -> None:
    rv = (await client.post(PODS, json=pod("a"))).json()["metadata"]["resourceVersion"]
    await client.patch(f"{PODS}/a", json={"metadata": {"labels": {"a": "1"}}}, headers=MERGE)
    stale = {"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}}
    assert (await client.patch(f"{PODS}/a", json=stale, headers=MERGE)).status_code == 409


async def test_terminal_phase_is_final(client: httpx.AsyncClient) -> None:
    await client.post(PODS, json=pod("a"))
    failed = {"status": {"phase": "Failed"}}
    assert (await client.patch(f"{PODS}/a/status", json=failed, headers=SMP)).status_code == 200
    back = {"status": {"phase": "Running"}}
    refused = await client.patch(f"{PODS}/a/status", json=back, headers=SMP)
    assert (refused.status_code, refused.json()["reason"]) == (422, "Invalid")


@pytest.mark.parametrize(
    ("before", "after", "refusal"),
    [
        (None, 60, None),
        (60, 30, None),
        (60, 60, None),
        (60, 90, "must be less than or equal to previous value"),
        (60, None, "must not update from a positive integer to nil value"),
    ],
    ids=["set", "shrink", "same", "grow", "unset"],
)
async def test_active_deadline_seconds_may_only_be_set_or_shrink(
    client: httpx.AsyncClient, before: int | None, after: int | None, refusal: str | None
) -> None:
    created = pod("a")
    created["spec"]["activeDeadlineSeconds"] = before
    await client.post(PODS, json=created)
    edit = {"spec": {"activeDeadlineSeconds": after}}
    response = await client.patch(f"{PODS}/a", json=edit, headers=SMP)
    if refusal is None:
        assert response.status_code == 200
        assert response.json()["spec"].get("activeDeadlineSeconds") == after
    else:
        assert (response.status_code, response.json()["reason"]) == (422, "Invalid")
        assert refusal in response.json()["message"]


SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def endpoint_slice(name: str, *addresses: str, family: str = "IPv4") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name},
        "addressType": family,
        "endpoints": [{"addresses": [address]} for address in addresses],
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }


async def test_endpoint_slices_refuse_special_addresses_as_the_real_server_does(
    client: httpx.AsyncClient,
) -> None:
    """A v1.36 API server answered 422 to a slice naming 127.0.0.1; so does the stand-in, in
    the server's words (``ValidateNonSpecialIP``), on create and on update."""
    refused = await client.post(SLICES, json=endpoint_slice("lo", "203.0.113.7", "127.0.0.1"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["reason"] == "Invalid"
    assert refused.json()["message"] == (
        'EndpointSlice.discovery.k8s.io "lo" is invalid: endpoints[1].addresses[0]: Invalid'
        ' value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'
    )
    link_local = await client.post(SLICES, json=endpoint_slice("ll", "169.254.169.254"))
    assert link_local.status_code == 422
    assert link_local.json()["message"].endswith(
        "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    )
    six = await client.post(SLICES, json=endpoint_slice("six", "::1", "fe80::1", family="IPv6"))
    assert six.status_code == 422
    assert "::1/128" in six.json()["message"] and "fe80::/10" in six.json()["message"]

    created = await client.post(SLICES, json=endpoint_slice("ok", "203.0.113.7"))
    assert created.status_code == 201, created.text
    patch = {"endpoints": [{"addresses": ["127.0.0.2"]}]}
    updated = await client.patch(f"{SLICES}/ok", json=patch, headers=MERGE)
    assert updated.status_code == 422
    assert "loopback range" in updated.json()["message"]


async def test_the_loopback_switch_lets_loopback_through_and_nothing_else(
    nursery: trio.Nursery,
) -> None:
    """``allow_loopback_endpoints``: for simulated instances on 127.0.0.1, and only them."""
    sim = KubeSim(allow_loopback_endpoints=True)
    await nursery.start(sim.serve)
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
        loopback = await http.post(SLICES, json=endpoint_slice("lo", "127.0.0.1"))
        assert loopback.status_code == 201, loopback.text
        link_local = await http.post(SLICES, json=endpoint_slice("ll", "169.254.1.1"))
        assert link_local.status_code == 422


async def test_status_subresource_only_touches_status(client: httpx.AsyncClient) -> None:
    await client.post(PODS, json=pod("a"))
    patch: dict[str, Any] = {"spec": {"nodeName": "moved"}, "status": {"phase": "Running"}}
    through_status = (await client.patch(f"{PODS}/a/status", json=patch, headers=SMP)).json()
    assert through_status["spec"]["nodeName"] == "vk-node"
    assert through_status["status"]["phase"] == "Running"
    patch = {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Failed"}}
    through_main = (await client.patch(f"{PODS}/a", json=patch, headers=SMP)).json()
    assert through_main["metadata"]["labels"] == {"x": "y"}
    assert through_main["status"]["phase"] == "Running"


async def test_ephemeral_containers_are_added_through_their_subresource_only(
    client: httpx.AsyncClient,
) -> None:
    """``kubectl debug``'s PATCH: the subresource adds one; the main resource cannot touch
    them; once added, one may be neither changed nor removed."""
    await client.post(PODS, json=pod("a"))
    debugger = {"name": "dbg", "image": "busybox", "stdin": True}
    patch: dict[str, Any] = {"spec": {"ephemeralContainers": [debugger]}}
    added = await client.patch(f"{PODS}/a/ephemeralcontainers", json=patch, headers=SMP)
    assert added.status_code == 200, added.text
    assert added.json()["spec"]["ephemeralContainers"] == [debugger]
    main = await client.patch(
        f"{PODS}/a", json={"spec": {"ephemeralContainers": []}}, headers=MERGE
    )
    assert main.json()["spec"]["ephemeralContainers"] == [debugger]
    changed = {"spec": {"ephemeralContainers": [{**debugger, "image": "alpine"}]}}
    refused = await client.patch(f"{PODS}/a/ephemeralcontainers", json=changed, headers=SMP)
    assert refused.status_code == 422
    assert 'existing ephemeral containers "dbg" may not be changed' in refused.json()["message"]


async def test_pod_generation_counts_spec_changes_only(client: httpx.AsyncClient) -> None:
    """As a 1.33+ server counts it: 1 at creation whatever the client sent, one up for a
    spec change (an ephemeral container included) and the graceful delete, never for
    metadata, status or binding; a status write without ``observedGeneration`` keeps it."""
    unbound = pod("a", node=None)
    unbound["metadata"]["generation"] = 7
    created = await client.post(PODS, json=unbound)
    assert created.json()["metadata"]["generation"] == 1

    async def generation() -> int:
        value: int = (await client.get(f"{PODS}/a")).json()["metadata"]["generation"]
        return value

    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "a"}}
    binding["target"] = {"kind": "Node", "name": "vk-node"}
    assert (await client.post(f"{PODS}/a/binding", json=binding)).status_code == 201
    await client.patch(f"{PODS}/a", json={"metadata": {"labels": {"x": "y"}}}, headers=SMP)
    status = {"status": {"phase": "Running", "observedGeneration": 1}}
    await client.patch(f"{PODS}/a/status", json=status, headers=SMP)
    assert await generation() == 1
    edit = {"spec": {"activeDeadlineSeconds": 60}}
    assert (await client.patch(f"{PODS}/a", json=edit, headers=SMP)).status_code == 200
    assert await generation() == 2
    await client.patch(f"{PODS}/a", json=edit, headers=SMP)  # the same again: no change
    assert await generation() == 2
    debugger = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    await client.patch(f"{PODS}/a/ephemeralcontainers", json=debugger, headers=SMP)
    assert await generation() == 3
    cleared = await client.put(
        f"{PODS}/a/status", json={**(await client.get(f"{PODS}/a")).json(), "status": {}}
    )
    assert cleared.json()["status"]["observedGeneration"] == 1
    await client.delete(f"{PODS}/a")
    assert await generation() == 4
    await client.request("DELETE", f"{PODS}/a", json={"gracePeriodSeconds": 10})
    assert await generation() == 4  # only the first, graceful, delete counts


async def test_node_status_put_and_patch(client: httpx.AsyncClient) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "vk-node"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    created = (await client.post("/api/v1/nodes", json=node)).json()
    assert created["status"]["conditions"][0]["status"] == "False"  # kept on create
    patch = {
        "metadata": {"labels": {"gpu": "yes"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
        },
    }
    patched = await client.patch("/api/v1/nodes/vk-node/status", json=patch, headers=SMP)
    assert patched.json()["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert patched.json()["metadata"]["labels"] == {"gpu": "yes"}


async def test_lease_create_and_renew_by_put(client: httpx.AsyncClient, kube_sim: KubeSim) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "vk-node"},
        "spec": {"holderIdentity": "vk-node", "leaseDurationSeconds": 40},
    }
    created = (await client.post(path, json=lease)).json()
    created["spec"]["renewTime"] = "2026-01-02T03:04:05.123456Z"
    renewed = await client.put(f"{path}/vk-node", json=created)
    assert renewed.json()["spec"]["renewTime"] == "2026-01-02T03:04:05.123456Z"
    template = "PUT /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
    assert kube_sim.requests[template] == 1


async def test_deployment_generation_counts_spec_changes_only(client: httpx.AsyncClient) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": 7},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod("x")["spec"]},
        },
        "status": {"replicas": 3},
    }
    created = (await client.post(path, json=deployment)).json()
    assert created["metadata"]["generation"] == 1  # the server's count, not the client's
    assert created["status"] == {}  # only a controller writes it, through /status
    assert created["spec"]["replicas"] == 1
    labelled = await client.patch(
        f"{path}/web", json={"metadata": {"labels": {"tier": "front"}}}, headers=SMP
    )
    assert labelled.json()["metadata"]["generation"] == 1
    scaled = await client.patch(f"{path}/web", json={"spec": {"replicas": 2}}, headers=SMP)
    assert scaled.json()["metadata"]["generation"] == 2
    status = {"status": {"observedGeneration": 2, "readyReplicas": 2}}
    reported = await client.patch(f"{path}/web/status", json=status, headers=SMP)
    assert reported.json()["metadata"]["generation"] == 2
    # Merged into what the stand-in's Deployment controller wrote meanwhile.
    assert status["status"].items() <= reported.json()["status"].items()


async def test_rbac_kinds_are_served_cluster_wide_and_namespaced(
    client: httpx.AsyncClient,
) -> None:
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    resources = {r["name"]: r for r in (await client.get(rbac)).json()["resources"]}
    assert {name: r["namespaced"] for name, r in resources.items()} == {
        "clusterroles": False,
        "clusterrolebindings": False,
        "roles": True,
        "rolebindings": True,
    }
    role = {"kind": "ClusterRole", "metadata": {"name": "r", "namespace": "ignored"}, "rules": []}
    created = (await client.post(f"{rbac}/clusterroles", json=role)).json()
    assert "namespace" not in created["metadata"]
    assert (await client.get(f"{rbac}/namespaces/default/clusterroles/r")).status_code == 404


async def test_pod_update_keeps_the_default_tolerations(client: httpx.AsyncClient) -> None:
    """Admission adds them on update too: an apply that replaces the list gets them back."""
    await client.post(PODS, json=pod("a"))
    mine = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    patched = await client.patch(f"{PODS}/a", json={"spec": {"tolerations": [mine]}}, headers=SMP)
    tolerations = patched.json()["spec"]["tolerations"]
    assert tolerations[0] == mine
    assert {t["key"] for t in tolerations[1:]} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }


async def test_graceful_pod_deletion(client: httpx.AsyncClient, kube_sim: KubeSim) -> None:
    uid = (await client.post(PODS, json=pod("a"))).json()["metadata"]["uid"]
    since = kube_sim.resource_version
    marked = await client.delete(f"{PODS}/a")
    assert marked.status_code == 200
    meta = marked.json()["metadata"]
    assert meta["deletionTimestamp"].endswith("Z") and meta["deletionGracePeriodSeconds"] == 30
    assert kube_sim.get("pods", "default", "a") is not None
    wrong = await client.request(
        "DELETE",
        f"{PODS}/a",
        json={"gracePeriodSeconds": 0, "preconditions": {"uid": "not-" + uid}},
    )
    assert (wrong.status_code, wrong.json()["reason"]) == (409, "Conflict")
    final = await client.request(
        "DELETE",
        f"{PODS}/a",
        json={"kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
    )
    assert final.status_code == 200
    assert kube_sim.get("pods", "default", "a") is None
    events = await read_events(client, PODS, 2, resourceVersion=since)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


@pytest.mark.parametrize(
    ("node", "phase"), [(None, None), ("vk-node", "Succeeded")], ids=["unbound", "terminal"]
)
async def test_unbound_or_terminal_pods_go_at_once(
    kube_sim: KubeSim, node: str | None, phase: str | None
) -> None:
    kube_sim.create(pod("a", node=node))
    if phase:
        kube_sim.patch("pods", "default", "a", {"status": {"phase": phase}}, subresource="status")
    kube_sim.delete("pods", "default", "a")
    assert kube_sim.get("pods", "default", "a") is None


async def test_finalizers_hold_deletion_until_removed(client: httpx.AsyncClient) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    config = {"metadata": {"name": "c", "finalizers": ["example.com/keep"]}, "data": {"k": "v"}}
    await client.post(path, json=config)
    deleted = (await client.delete(f"{path}/c")).json()
    assert deleted["metadata"]["deletionTimestamp"]
    assert (await client.get(f"{path}/c")).status_code == 200
    patch = {"metadata": {"finalizers": None}}
    await client.patch(f"{path}/c", json=patch, headers=MERGE)
    assert (await client.get(f"{path}/c")).status_code == 404


async def test_json_patch_applies_and_a_failed_test_is_422(client: httpx.AsyncClient) -> None:
    rv = (await client.post(PODS, json=pod("a"))).json()["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
    ]
    applied = await client.patch(f"{PODS}/a", json=ops, headers=JSON_PATCH)
    assert applied.json()["metadata"]["annotations"] == {"a~b/c": "1"}
    failed = await client.patch(f"{PODS}/a", json=ops[:1], headers=JSON_PATCH)
    assert (failed.status_code, failed.json()["reason"]) == (422, "Invalid")


async def test_events_are_found_by_involved_object(client: httpx.AsyncClient) -> None:
    event = {
        "metadata": {"name": "a.1"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "u1"},
        "reason": "NoOffers",
        "message": "no offers match",
        "type": "Warning",
    }
    await client.post("/api/v1/namespaces/default/events", json=event)
    selector = "involvedObject.name=a,involvedObject.namespace=default,involvedObject.uid=u1"
    found = (await client.get("/api/v1/events", params={"fieldSelector": selector})).json()
    assert [e["reason"] for e in found["items"]] == ["NoOffers"]


async def test_table_for_pods_shows_waiting_reason_and_terminating(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    kube_sim.create(pod("a"))
    waiting = {"waiting": {"reason": "NoOffers"}}
    status = {"status": {"containerStatuses": [{"name": "main", "state": waiting}]}}
    kube_sim.patch(
        "pods", "default", "a", status, content_type=SMP["Content-Type"], subresource="status"
    )
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    table = (await client.get(PODS, headers=accept)).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert table["rows"][0]["cells"][:4] == ["a", "0/1", "NoOffers", "0"]
    assert table["rows"][0]["object"]["metadata"]["name"] == "a"
    kube_sim.delete("pods", "default", "a")
    table = (await client.get(f"{PODS}/a", headers=accept)).json()
    assert table["rows"][0]["cells"][2] == "Terminating"


async def test_wait_until_wakes_on_requests(client: httpx.AsyncClient, kube_sim: KubeSim) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.get, PODS)
        template = "GET /api/v1/namespaces/{namespace}/pods"
        with trio.fail_after(5):
            await kube_sim.wait_until(lambda: kube_sim.requests[template] == 1)


# ----- the patch functions on their own ----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
        ({"conditions": [{"type": "A", "s": 1}]}, {"conditions": [{"type": "B"}]}, None),
        ({"tags": [1, 2]}, {"tags": [3]}, {"tags": [3]}),
    ],
    ids=["nested", "lists-replace", "scalars"],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    result = kube_patch.merge_patch(target, patch)
    assert result == (expected if expected is not None else patch)


def test_strategic_merge_directives() -> None:
    target = {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "1"}]},
    }
    patch = {
        "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "y"}],
            "containers": [{"name": "x", "$patch": "delete"}, {"name": "y", "image": "2"}],
        },
    }
    assert kube_patch.strategic_merge_patch(target, patch) == {
        "metadata": {"finalizers": ["b", "c"]},
        "spec": {"containers": [{"name": "y", "image": "2"}]},
    }


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/a/1"},
        {"op": "replace", "path": "/b/c", "value": 2},
        {"op": "copy", "from": "/b", "path": "/d"},
        {"op": "move", "from": "/d/c", "path": "/e"},
        {"op": "test", "path": "/e", "value": 2},
    ]
    assert kube_patch.json_patch(doc, ops) == {"a": [0, 2, 3], "b": {"c": 2}, "d": {}, "e": 2}
    assert doc == {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(kube_patch.PatchError) as error:
        kube_patch.json_patch(doc, [{"op": "replace", "path": "/missing", "value": 1}])
    assert error.value.status == 422
