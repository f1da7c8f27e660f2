"""The account's money, end to end (the node over both simulators): a pod waits with the
credit reason while the credit is too low and nothing is bought, ``/readyz`` and an Event on
the Node say so, adding credit in the simulator lets it run; its ``vast.ai/cost`` follows
what it has cost and is final when it ends.

The ten-minute cost comparison with the simulator's bill runs in virtual time
(``tests/provider/test_account.py``); this one runs for seconds of real time.
"""

from __future__ import annotations

import httpx
import pytest
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import (
    bought_for,
    delete_and_wait_gone,
    gpu_pod,
    phase,
    settings_for,
    wait_pod,
    waiting_reason,
)
from tests.e2e.test_money import readyz_becomes
from vk_trio.annotations import COST
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim


async def node_event_reasons(cluster: Cluster) -> list[str]:
    events = await cluster.list("events", "default")  # where Node Events go
    return [e["reason"] for e in events if e["involvedObject"].get("kind") == "Node"]


async def test_low_credit_holds_new_pods_until_credit_is_added(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    vast_sim.set_faults(credit=0.001)
    runtime: NodeRuntime = await nursery.start(
        serve_node, settings_for(vast_sim.url, cluster.kubeconfig)
    )
    await cluster.create(gpu_pod("thrifty", cluster.namespace))
    pod = await wait_pod(cluster, "thrifty", lambda p: waiting_reason(p) == "CreditLow")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "credit" in message
    async with httpx.AsyncClient(base_url=runtime.health_url) as probes:
        assert "credit" in await readyz_becomes(probes, 503)
        await trio.sleep(2.0)  # several slow sweeps: still nothing bought
        assert bought_for(vast_sim, pod) == [] and vast_sim.created == 0

        vast_sim.set_faults(credit=100.0)
        running = await wait_pod(cluster, "thrifty", lambda p: phase(p) == "Running")
        await readyz_becomes(probes, 200)
    reasons = await node_event_reasons(cluster)
    assert "CreditExhausted" in reasons and "CreditOK" in reasons
    assert len(bought_for(vast_sim, running)) == 1

    costed = await wait_pod(
        cluster, "thrifty", lambda p: float(p["metadata"]["annotations"].get(COST, 0)) > 0
    )
    shown = float(costed["metadata"]["annotations"][COST])
    [billed] = bought_for(vast_sim, running)
    assert 0 < shown <= billed["cost"] + 1e-6


async def test_the_cost_on_a_pod_that_ended_is_its_final_bill(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    """Seconds of real time: the meters are off by up to a fast sweep (0.1 s here) of GPU
    time, so the record is compared with the bill loosely; it stops changing once final."""
    await cluster.create(gpu_pod("finished", cluster.namespace, restart_policy="Never"))
    pod = await wait_pod(cluster, "finished", lambda p: phase(p) == "Running")
    [instance] = bought_for(vast_sim, pod)
    await trio.sleep(2.0)
    vast_sim.exit_instance(instance["id"], code=0)
    await wait_pod(cluster, "finished", lambda p: phase(p) == "Succeeded")
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda sim: sim.destroyed == 1)
    await trio.sleep(1.0)  # the final record is written as the instance is released
    final = await wait_pod(cluster, "finished", lambda p: COST in p["metadata"]["annotations"])
    await trio.sleep(2.0)  # several slow sweeps: nothing more is added
    later = await cluster.get("pods", cluster.namespace, "finished")
    assert later is not None
    assert later["metadata"]["annotations"][COST] == final["metadata"]["annotations"][COST]
    [billed] = bought_for(vast_sim, final)
    recorded = float(final["metadata"]["annotations"][COST])
    assert recorded == pytest.approx(billed["cost"], rel=0.25, abs=2e-6)
    await delete_and_wait_gone(cluster, "finished")


async def test_a_restarted_node_adds_to_the_cost_on_the_pod(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    """The annotation is the record: a new process continues from it, not from zero."""
    settings = settings_for(vast_sim.url, cluster.kubeconfig)
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            await cluster.create(gpu_pod("kept", cluster.namespace))
            await wait_pod(cluster, "kept", lambda p: phase(p) == "Running")
            await trio.sleep(2.0)
            before = await wait_pod(cluster, "kept", lambda p: COST in p["metadata"]["annotations"])
            first_run.cancel()
    recorded = float(before["metadata"]["annotations"][COST])
    assert recorded > 0
    await trio.sleep(1.0)  # while no node runs, the instance bills on
    await nursery.start(serve_node, settings)
    shown_first = before["metadata"]["annotations"][COST]
    after = await wait_pod(
        cluster, "kept", lambda p: p["metadata"]["annotations"][COST] != shown_first
    )
    [billed] = bought_for(vast_sim, after)
    shown = float(after["metadata"]["annotations"][COST])
    # The first write of the new process continues from the record (a fresh start would
    # write the half second it saw), and is never more than was billed; the second
    # without a node is what is lost.
    assert recorded < shown <= billed["cost"] + 1e-6
