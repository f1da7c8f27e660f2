"""The node Lease against the API stand-in: creation, owner, MicroTime, renewal, recovery."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeForbidden
from vk_trio.kube.lease import lease_body, run_lease

NAME = "vk-vast"
UID = "node-uid-1"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
GET = "GET /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
PUT = "PUT /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


def lease(sim: KubeSim) -> dict[str, Any] | None:
    return sim.get("leases", "kube-node-lease", NAME)


def test_lease_body_wire_format() -> None:
    body = lease_body(node_name=NAME, node_uid=UID, duration=40)
    assert MICRO.match(body["spec"]["renewTime"])
    assert body["spec"]["holderIdentity"] == NAME
    assert body["spec"]["leaseDurationSeconds"] == 40
    assert body["metadata"]["namespace"] == "kube-node-lease"
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NAME, "uid": UID}
    ]


@pytest.mark.parametrize(("duration", "fraction"), [(10, 1.0), (10, 0.0), (10, 2.0)])
async def test_renew_interval_must_be_below_duration(duration: int, fraction: float) -> None:
    http = httpx.AsyncClient(base_url="http://unused")
    with pytest.raises(ValueError, match="renew interval"):
        await run_lease(
            KubeClient(http),
            node_name=NAME,
            node_uid=UID,
            duration=duration,
            renew_fraction=fraction,
        )


async def test_lease_created_owned_and_renewed(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    await nursery.start(
        lambda task_status: run_lease(
            kube, node_name=NAME, node_uid=UID, duration=2, task_status=task_status
        )
    )
    created = lease(kube_sim)
    assert created is not None
    assert created["spec"]["holderIdentity"] == NAME
    assert created["spec"]["leaseDurationSeconds"] == 2
    assert MICRO.match(created["spec"]["renewTime"])
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NAME, "uid": UID}
    ]
    with trio.fail_after(3):
        await kube_sim.wait_until(lambda s: s.requests[PUT] >= 2)
    renewed = lease(kube_sim)
    assert renewed is not None
    assert renewed["spec"]["renewTime"] > created["spec"]["renewTime"]
    assert renewed["metadata"]["uid"] == created["metadata"]["uid"]


async def test_lease_recovers_from_deletion_and_foreign_writes(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    await nursery.start(
        lambda task_status: run_lease(
            kube, node_name=NAME, node_uid=UID, duration=2, task_status=task_status
        )
    )
    first = lease(kube_sim)
    assert first is not None
    # Someone else bumps the resourceVersion: our cached PUT conflicts, we re-GET and retry.
    kube_sim.patch("leases", "kube-node-lease", NAME, {"metadata": {"labels": {"x": "y"}}})
    puts, gets = kube_sim.requests[PUT], kube_sim.requests[GET]
    with trio.fail_after(3):
        await kube_sim.wait_until(lambda s: s.requests[PUT] >= puts + 2)
    assert kube_sim.requests[GET] == gets + 1  # the conflict's re-read
    current = lease(kube_sim)
    assert current is not None
    assert current["metadata"]["labels"] == {"x": "y"}
    assert current["spec"]["renewTime"] > first["spec"]["renewTime"]

    # Deleted (e.g. by an admin): the next renewal fails, ensure() re-creates it.
    kube_sim.delete("leases", "kube-node-lease", NAME)
    with trio.fail_after(3):
        await kube_sim.wait_until(lambda s: lease(s) is not None)
    recreated = lease(kube_sim)
    assert recreated is not None
    assert recreated["metadata"]["uid"] != first["metadata"]["uid"]
    assert recreated["metadata"]["ownerReferences"][0]["uid"] == UID


async def test_unhealthy_skips_renewal_but_starts(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    healthy = [False]
    await nursery.start(
        lambda task_status: run_lease(
            kube,
            node_name=NAME,
            node_uid=UID,
            duration=2,
            healthy=lambda: healthy[-1],
            task_status=task_status,
        )
    )
    assert lease(kube_sim) is None
    healthy.append(True)
    with trio.fail_after(3):
        await kube_sim.wait_until(lambda s: lease(s) is not None)


async def test_retries_with_backoff_then_escalates_forbidden_before_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[str, float]] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, trio.current_time()))
        if len(calls) <= 3:
            return httpx.Response(503, text="unavailable")
        return httpx.Response(403, json={"kind": "Status", "message": "leases is forbidden"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(flaky), base_url="http://kube")
    start = trio.current_time()
    with pytest.raises(KubeForbidden):
        await run_lease(KubeClient(http), node_name=NAME, node_uid=UID)
    # GETs at 0, 0.2, 0.6 (200 ms doubling, no inner request retries), then the 403.
    assert [round(t - start, 3) for _, t in calls] == [0.0, 0.2, 0.6, 1.4]


async def test_owner_follows_a_reregistered_node(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    uids = [UID]
    await nursery.start(
        lambda task_status: run_lease(
            kube, node_name=NAME, node_uid=lambda: uids[-1], duration=2, task_status=task_status
        )
    )
    uids.append("node-uid-2")

    def owner(sim: KubeSim) -> str:
        current = lease(sim)
        return current["metadata"]["ownerReferences"][0]["uid"] if current else ""

    with trio.fail_after(3):
        await kube_sim.wait_until(lambda s: owner(s) == "node-uid-2")
    current = lease(kube_sim)
    assert current is not None
    assert len(current["metadata"]["ownerReferences"]) == 1
