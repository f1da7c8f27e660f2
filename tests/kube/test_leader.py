"""Leader election against the API stand-in, on fake time: acquire, renew, stand by, take
over after expiry, lose to another holder, fence on a silent API server, release on stop.

Virtual time is Trio's ``MockClock`` with a small autojump threshold (as ``tests/node``): it
jumps only after 50 ms of real idleness, so socket I/O to the stand-in is never mistaken for
idleness, and the timings asserted are client-go's (15 s lease, 10 s renew deadline, 2 s
retry period), taken as they are.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from vk_trio import errors
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.errors import Fenced, PermanentError, TemporaryError
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.leader import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    Election,
    Elector,
    lease_name,
)

NAMESPACE = "kube-system"
NAME = lease_name("vk-node")
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{NAME}"
GET = "GET /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
PUT = "PUT /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


async def until(predicate: Callable[[], object]) -> None:
    """Poll on virtual time (cheap): some predicates change without any API traffic."""
    for _ in range(600):
        if predicate():
            return
        await trio.sleep(1.0)
    raise AssertionError("not within 600 s of virtual time")


def elector(identity: str) -> Elector:
    return Elector(Election(namespace=NAMESPACE, name=NAME, identity=identity))


def spec(sim: KubeSim) -> dict[str, Any]:
    lease = sim.get("leases", NAMESPACE, NAME)
    assert lease is not None
    found: dict[str, Any] = lease["spec"]
    return found


class Replica:
    """One replica: its elector, and a driving scope standing for everything a leader runs."""

    def __init__(self, kube: KubeClient, identity: str) -> None:
        self.kube = kube
        self.elector = elector(identity)
        self.scope = trio.CancelScope()
        self.led_at: float | None = None
        self.stopped_at: float | None = None
        """When the driving scope ended (cancelled by a loss, or by its deadline)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self.scope:
            async with trio.open_nursery() as driving:
                await driving.start(self.elector.run, self.kube, driving.cancel_scope)
                self.led_at = trio.current_time()
                await trio.sleep_forever()
        self.stopped_at = trio.current_time()


def test_timings_are_client_go_defaults_and_checked() -> None:
    assert (LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD) == (15, 10.0, 2.0)
    for lease, renew, retry in [(10, 10.0, 2.0), (15, 10.0, 9.0), (15, 20.0, 2.0)]:
        with pytest.raises(ValueError, match="renew_deadline"):
            Election(
                namespace=NAMESPACE,
                name=NAME,
                identity="a",
                lease_duration=lease,
                renew_deadline=renew,
                retry_period=retry,
            )


async def test_the_first_replica_creates_the_lease_and_renews_it_every_retry_period(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    a = Replica(kube, "pod-a")
    await nursery.start(a.run)
    await until(lambda: a.led_at is not None)
    created = spec(kube_sim)
    assert created["holderIdentity"] == "pod-a"
    assert created["leaseDurationSeconds"] == 15
    assert created["leaseTransitions"] == 0
    assert created["acquireTime"] <= created["renewTime"]
    assert a.elector.holds() and a.elector.standby_message() is None

    gets, puts = kube_sim.requests[GET], kube_sim.requests[PUT]
    await trio.sleep(10 * RETRY_PERIOD + 0.5)
    assert kube_sim.requests[PUT] - puts == 10  # one renewal per retry period
    assert kube_sim.requests[GET] == gets  # the leader renews what it wrote, without a GET
    renewed = spec(kube_sim)
    assert renewed["acquireTime"] == created["acquireTime"]
    assert renewed["renewTime"] > created["renewTime"]
    assert renewed["leaseTransitions"] == 0
    assert a.stopped_at is None


async def test_a_standby_waits_while_the_leader_renews_and_takes_over_after_it_dies(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    a, b = Replica(kube, "pod-a"), Replica(kube, "pod-b")
    await nursery.start(a.run)
    await until(lambda: a.led_at is not None)
    await nursery.start(b.run)
    await trio.sleep(60)
    assert b.led_at is None
    assert b.elector.standby_message() == "standby: leader is pod-a"
    assert b.elector.standby_problem() is None

    # SIGKILL: the leader vanishes without a word; its last renewal is at most 2 s old.
    killed = trio.current_time()
    a.scope.cancel()
    spec_before = spec(kube_sim)
    await until(lambda: b.led_at is not None)
    assert b.led_at is not None
    took = b.led_at - killed
    # Not before the lease ran out on b's clock, and within one poll after it did.
    assert LEASE_DURATION - RETRY_PERIOD <= took <= LEASE_DURATION + 2 * RETRY_PERIOD
    taken = spec(kube_sim)
    assert taken["holderIdentity"] == "pod-b"
    assert taken["leaseTransitions"] == 1
    assert taken["acquireTime"] > spec_before["renewTime"]


async def test_two_standbys_racing_for_an_expired_lease_elect_one(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    kube_sim.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"holderIdentity": "dead-pod", "leaseDurationSeconds": 15},
        }
    )
    replicas = [Replica(kube, f"pod-{i}") for i in range(3)]
    for replica in replicas:
        await nursery.start(replica.run)
    await until(lambda: any(r.led_at is not None for r in replicas))
    await trio.sleep(30)
    leaders = [r for r in replicas if r.elector.leading]
    assert len(leaders) == 1  # optimistic concurrency: the others' PUTs got 409
    assert spec(kube_sim)["holderIdentity"] == leaders[0].elector.election.identity
    assert spec(kube_sim)["leaseTransitions"] == 1
    assert all(r.stopped_at is None for r in replicas)


async def test_a_leader_that_sees_another_holder_stops_driving_at_once(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    a = Replica(kube, "pod-a")
    await nursery.start(a.run)
    await until(lambda: a.led_at is not None)
    # Someone else took it (an admin, a replica with a very different clock): a write that
    # moves the resourceVersion, so a's next PUT conflicts, re-reads and sees the holder.
    kube_sim.patch("leases", NAMESPACE, NAME, {"spec": {"holderIdentity": "pod-x"}})
    taken = trio.current_time()
    await until(lambda: a.stopped_at is not None)
    assert a.stopped_at is not None
    assert a.stopped_at - taken <= RETRY_PERIOD + 0.5  # the next renewal, not the deadline
    assert a.elector.lost_leadership() == f"the Lease {NAME} is held by pod-x"
    assert not a.elector.holds()
    with pytest.raises(Fenced):
        a.elector.fence("PUT /api/v0/asks/1/")
    assert spec(kube_sim)["holderIdentity"] == "pod-x"  # a never wrote over it


async def test_a_leader_cut_off_from_the_api_server_is_fenced_by_its_deadline(
    clock: MockClock, kube_sim: KubeSim, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Renewals hang (a partition): nothing notices, and yet the driving scope ends at the
    renew deadline, before a standby on the other side could have taken the Lease."""
    cut = trio.Event()

    async def partition(request: Request) -> Response:
        if cut.is_set():
            await trio.sleep_forever()
        return await kube_sim.handle(request)

    url = await nursery.start(functools.partial(serve_http, partition))
    async with KubeClient(httpx.AsyncClient(base_url=url)) as kube:
        a = Replica(kube, "pod-a")
        await nursery.start(a.run)
        await until(lambda: a.led_at is not None)
        await trio.sleep(5 * RETRY_PERIOD + 0.5)
        last_renewal = trio.current_time()  # the renewal of the last whole period was sent
        cut.set()
        await until(lambda: a.stopped_at is not None)
        assert a.stopped_at is not None
        assert a.stopped_at - last_renewal <= RENEW_DEADLINE
        assert a.stopped_at - last_renewal < LEASE_DURATION  # before anyone may take over
        assert a.elector.lost_leadership() is not None
        with pytest.raises(Fenced):
            a.elector.fence("PUT /api/v0/asks/1/")
        a.scope.cancel()


async def test_a_released_lease_is_taken_within_one_retry_period(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    a, b = Replica(kube, "pod-a"), Replica(kube, "pod-b")
    await nursery.start(a.run)
    await until(lambda: a.led_at is not None)
    await nursery.start(b.run)
    await trio.sleep(7)
    a.scope.cancel()  # SIGTERM: stop driving, then give the Lease up
    await a.elector.release()
    released = trio.current_time()
    assert not a.elector.leading
    await until(lambda: b.led_at is not None)
    assert b.led_at is not None
    assert b.led_at - released <= RETRY_PERIOD + 0.5
    lease = spec(kube_sim)
    assert lease["holderIdentity"] == "pod-b"
    assert lease["leaseTransitions"] == 1


async def test_release_clears_the_holder_as_client_go_does(
    clock: MockClock, kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    a = Replica(kube, "pod-a")
    await nursery.start(a.run)
    await until(lambda: a.led_at is not None)
    acquired = spec(kube_sim)
    a.scope.cancel()
    await a.elector.release()
    released = spec(kube_sim)
    assert released["holderIdentity"] == ""
    assert released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == acquired["leaseTransitions"]
    # A standby that never held it does not write anything when it stops.
    b = elector("pod-b")
    puts = kube_sim.requests[PUT]
    await b.release()
    assert kube_sim.requests[PUT] == puts


async def test_a_forbidden_lease_fails_at_start(
    clock: MockClock, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    async def forbid(request: Request) -> Response:
        return Response.json(
            {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}, 403
        )

    url = await nursery.start(functools.partial(serve_http, forbid))
    async with KubeClient(httpx.AsyncClient(base_url=url)) as kube:
        with pytest.raises(PermanentError):
            await elector("pod-a").run(kube, trio.CancelScope())


def test_leadership_lost_is_in_the_error_tree() -> None:
    """Issue 20: it stood outside ``vk_trio.errors``; losing the lead is temporary (the
    replica stands by and may lead again), like ``Fenced``."""
    assert issubclass(errors.LeadershipLost, TemporaryError)
