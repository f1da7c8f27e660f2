"""The account's money against the Vast simulator, in virtual time: the credit gate (a pod
waits with ``CreditLow`` and nothing is bought while the credit is too low; adding credit
lets it buy) and what a pod cost (the node's meters against the simulator's bill, the
``vast.ai/cost`` record written on the pod and continued by a restarted node).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
from trio.testing import MockClock

from tests.plugins.vast_sim import VastSimFactory
from tests.provider.fakes import FakeNamespaceBudgets, FakeObjects, FakeProgress
from vk_trio.annotations import COST, COST_INSTANCES
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.models import Pod
from vk_trio.provider.account import CostRecorder, CreditState, CreditWatch
from vk_trio.provider.budget import Budget
from vk_trio.provider.buying import CREDIT_LOW, Buyer
from vk_trio.provider.cost import CostBook
from vk_trio.provider.instances import destroy_all
from vk_trio.provider.labels import LabelOwner, instance_label
from vk_trio.provider.market import OfferClaims, SharedSearches
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.requirements import Requirements
from vk_trio.vast import CreateInstance, Instance, Pacer, VastClient

NODE = "vk-money"
SLOW = 15.0

POD = msgspec.convert(
    {
        "metadata": {"name": "p", "namespace": "team", "uid": "uid-p"},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}]},
    },
    Pod,
)


def state_of(watch: CreditWatch) -> CreditState:
    """The watch's state now (a call, so that mypy does not keep an earlier assert's)."""
    return watch.state


@pytest.fixture
def jumpy_clock() -> MockClock:
    """Virtual time that jumps after 10 ms of real idleness (sockets are real here)."""
    return MockClock(autojump_threshold=0.01)


async def test_low_credit_stops_buying_until_credit_is_added(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory()
    sim.set_faults(credit=0.001)  # no offer lasts an hour on a tenth of a cent
    told: list[tuple[str, str, str]] = []

    async def node_event(kind: str, reason: str, message: str) -> None:
        told.append((kind, reason, message))

    progress = FakeProgress(POD)
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as vast:
        poller = InstancePoller(vast, node=NODE, slow=SLOW)
        watch = CreditWatch(
            vast, poller, stop_hours=1.0, warn_hours=6.0, interval=SLOW, node_event=node_event
        )
        buyer = Buyer(
            settings=Settings(node_name=NODE, poll_slow=SLOW),
            vast=vast,
            poller=poller,
            searches=SharedSearches(vast),
            claims=OfferClaims(),
            budget=Budget(poller, max_hourly=None, max_instances=None),
            objects=FakeObjects(),
            namespaces=FakeNamespaceBudgets(),
            credit=watch.refusal,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            await watch.check()
            nursery.start_soon(watch.run)
            bought: list[int] = []
            done = trio.Event()

            async def buy() -> None:
                bought.append(
                    await buyer.acquire(
                        POD,
                        Requirements(verified=False, min_reliability=0.0),
                        label=instance_label(NODE, "team", "p", "uid-p"),
                        excluded_machines=set(),
                        progress=progress,
                    )
                )
                done.set()

            nursery.start_soon(buy)
            await trio.sleep(10 * SLOW)
            assert sim.created == 0
            assert state_of(watch) is CreditState.STOPPED
            problem = watch.problem()
            assert problem is not None and "credit" in problem
            sim.set_faults(credit=500.0)
            with trio.fail_after(3 * SLOW):
                await done.wait()
            await trio.sleep(2 * SLOW)  # the watch reads the credit again
            assert state_of(watch) is CreditState.OK
            sim.set_faults(credit=3 * poller.spend_per_hour())  # three hours left: a warning
            await watch.check()
            assert state_of(watch) is CreditState.LOW and watch.problem() is None
            assert watch.refusal(0.0) is None  # warned, still buying
            nursery.cancel_scope.cancel()
    assert sim.created == 1
    waits = [(reason, message) for reason, message in progress.waits if reason == CREDIT_LOW]
    assert waits and all("credit" in message for _, message in waits)
    assert [(kind, reason) for kind, reason, _ in told] == [
        ("Warning", "CreditExhausted"),
        ("Normal", "CreditOK"),
        ("Warning", "CreditLow"),
    ]


async def test_a_pods_cost_over_ten_minutes_matches_the_bill(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory, kube_sim: KubeSim, tmp_path: Path
) -> None:
    """Ten simulated minutes running after a minute of boot: the node's meter, the pod's
    ``vast.ai/cost`` and Vast's charges agree with the simulator's ledger within 1%."""
    sim = await vast_sim_factory(boot_seconds=60.0)
    created = kube_sim.create(
        {"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    )
    uid = created["metadata"]["uid"]
    kube_sim.write_kubeconfig(tmp_path / "kubeconfig")
    kube = KubeClient.from_config(await load_config(kubeconfig=str(tmp_path / "kubeconfig")))
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as vast:
        poller = InstancePoller(vast, node=NODE, fast=2.0, slow=SLOW)
        recorder = CostRecorder(poller.costs, kube, vast, interval=SLOW)
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            nursery.start_soon(recorder.run)
            instance_id = await _buy(sim, vast, instance_label(NODE, "default", "p", uid))
            poller.hurry([instance_id])
            await trio.sleep(60.0 + 600.0)
            await destroy_all(vast, poller, uid, http_timeout=10.0)
            pod = msgspec.convert(kube_sim.get("pods", "default", "p"), Pod)
            await recorder.final(pod)
            await recorder.reconcile()
            nursery.cancel_scope.cancel()
    await kube.aclose()
    [billed] = [row for row in sim.ledger() if row["id"] == instance_id]
    assert billed["gpu_seconds"] == pytest.approx(600.0, abs=0.5)
    recorded = kube_sim.get("pods", "default", "p")["metadata"]["annotations"]  # type: ignore[index]
    assert float(recorded[COST]) == pytest.approx(billed["cost"], rel=0.01)
    assert msgspec.json.decode(recorded[COST_INSTANCES]).keys() == {str(instance_id)}
    reconciled = poller.costs.last_reconciliation
    assert reconciled is not None and reconciled.instances == 1
    assert reconciled.vast == pytest.approx(billed["cost"], rel=1e-6)
    assert abs(reconciled.gap_ratio) < 0.01


async def _buy(sim: VastSim, vast: VastClient, label: str) -> int:
    [offer_id] = sim.add_offers([{"dph_base": 0.5, "storage_cost": 0.2}])
    created = await vast.create_instance(offer_id, CreateInstance(image="x", disk=20, label=label))
    return created.instance_id


def test_a_restarted_node_adds_to_the_record_on_the_pod() -> None:
    owner = LabelOwner("default", "p", "uid-p")
    label = instance_label(NODE, *owner)
    before = CostBook(NODE)
    running = msgspec.convert(
        {"id": 7, "label": label, "actual_status": "running", "dph_total": 3.6}, Instance
    )
    before.observe([running], 0.0)
    before.observe([running], 100.0)  # 100 s at $3.6/h: 10 cents
    record = before.record("uid-p", 100.0)
    assert record is not None and record[COST] == "0.100000"
    after = CostBook(NODE)  # a new process: its first sweep, then the pod's record
    after.observe([running], 500.0)
    after.seed("uid-p", owner, {k: v for k, v in record.items() if v is not None})
    after.observe([running], 600.0)
    assert after.total("uid-p", 600.0) == pytest.approx(0.2)
    assert after.record("uid-p", 600.0) is not None
    after.observe([], 700.0)  # destroyed: the meter stops
    assert after.total("uid-p", 1000.0) == pytest.approx(0.3)
