"""Outbid interruptible pods end to end, over both simulators: the simulator outbids a pod's
instance (``/_sim/faults`` ``{"outbid": id}``) and the pod shows ``DisruptionTarget``, turns
not Ready, and follows its ``vast.ai/on-outbid`` policy: resumed by Vast (``wait``), resumed by
a higher bid within ``vast.ai/price-max`` (``rebid``), replaced after the grace (``replace``).
While it is stopped, the node's spend counts its storage only, and its cap its full price; a
restarted node counts the grace from the outbid the pod records, not from its own start.
"""

from __future__ import annotations

import httpx
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import (
    H100_OFFER,
    Obj,
    bought_for,
    event_reasons,
    gpu_pod,
    settings_for,
    wait_event,
    wait_pod,
    waiting_reason,
)
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim

PRICE = 0.40
"""The RTX 3090s' on-demand price: they bid at 90% of the GPU part (``min_bid``)."""


def interruptible(policy: str, *, cap: str = "0.50", grace: str = "2s") -> dict[str, str]:
    return {
        "vast.ai/gpu-type": "RTX 3090",
        "vast.ai/gpu-fallbacks": "",
        "vast.ai/interruptible": "true",
        "vast.ai/price-max": cap,
        "vast.ai/on-outbid": policy,
        "vast.ai/outbid-grace": grace,
    }


def condition(pod: Obj, kind: str) -> str | None:
    found = [c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == kind]
    return str(found[0]["status"]) if found else None


def ready(pod: Obj) -> bool:
    return condition(pod, "Ready") == "True"


def disrupted(pod: Obj) -> bool:
    return condition(pod, "DisruptionTarget") == "True" and condition(pod, "Ready") == "False"


def only_3090s(vast: VastSim, count: int = 4) -> None:
    vast.remove_offers(lambda row: row.get("gpu_name") == "RTX 3090")
    vast.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=PRICE)] * count)


async def outbid_running_pod(
    vast: VastSim, cluster: Cluster, name: str, annotations: dict[str, str]
) -> tuple[Obj, int]:
    """Create the pod, wait until it is Ready, outbid its instance through the fault
    endpoint; returns the pod once it shows the disruption, and the instance id."""
    await cluster.create(gpu_pod(name, cluster.namespace, annotations=annotations))
    pod = await wait_pod(cluster, name, ready, within=20)
    [bought] = bought_for(vast, pod)
    async with httpx.AsyncClient(base_url=str(vast.url)) as http:
        reply = await http.post("/_sim/faults", json={"outbid": bought["id"]})
        assert reply.status_code == 200
    pod = await wait_pod(cluster, name, disrupted, within=10)
    await wait_event(cluster, pod, "VastOutbid")
    return pod, int(bought["id"])


async def test_wait_shows_the_disruption_and_counts_storage_until_vast_resumes_it(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    only_3090s(vast_sim)
    annotations = interruptible("wait", grace="1h")
    pod, instance_id = await outbid_running_pod(vast_sim, cluster, "waits", annotations)
    [target] = [c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert target["reason"] == "VastOutbid"
    assert target["lastTransitionTime"]  # since when
    assert "outbid" in target["message"]
    assert condition(pod, "ContainersReady") == "False"
    stopped = vast_sim.instance(instance_id)
    assert stopped is not None
    await node.poller.fresh()  # a sweep after the stop: the node bills its storage only
    assert node.poller.spend_per_hour() == stopped["storage_total_cost"] > 0

    vast_sim.resume(instance_id)
    pod = await wait_pod(cluster, "waits", ready, within=20)
    assert condition(pod, "DisruptionTarget") == "False"
    assert [i["id"] for i in bought_for(vast_sim, pod)] == [instance_id]  # the same one
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


async def test_rebid_raises_the_bid_within_the_cap_and_vast_resumes_it(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    only_3090s(vast_sim)
    pod, instance_id = await outbid_running_pod(
        vast_sim, cluster, "rebids", interruptible("rebid", cap="0.50", grace="1h")
    )
    pod = await wait_pod(cluster, "rebids", ready, within=20)  # no resume: the bid did it
    assert "BidRaised" in await event_reasons(cluster, pod)
    resumed = vast_sim.instance(instance_id)
    assert resumed is not None
    assert resumed["dph_total"] <= 0.50 + 1e-9
    assert vast_sim.stats()["PUT /api/v0/instances/bid_price/{id}/"] == 1
    assert condition(pod, "DisruptionTarget") == "False"


async def test_rebid_never_bids_above_the_cap_and_the_pod_waits(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    only_3090s(vast_sim)
    _, instance_id = await outbid_running_pod(
        vast_sim, cluster, "capped", interruptible("rebid", cap="0.40", grace="1h")
    )
    with trio.fail_after(10):
        await vast_sim.wait_until(
            lambda s: s.stats().get("PUT /api/v0/instances/bid_price/{id}/", 0) == 1
        )
    await trio.sleep(1.0)  # several sweeps: no second bid, no resume
    shown = vast_sim.instance(instance_id)
    assert shown is not None
    assert shown["actual_status"] == "stopped"
    assert shown["dph_total"] <= 0.40 + 1e-9
    assert vast_sim.stats()["PUT /api/v0/instances/bid_price/{id}/"] == 1
    pod = await wait_pod(cluster, "capped", disrupted)
    assert not ready(pod)


async def test_replace_buys_a_new_instance_after_the_grace(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    only_3090s(vast_sim)
    _, first = await outbid_running_pod(
        vast_sim, cluster, "replaced", interruptible("replace", grace="2s")
    )
    pod = await wait_pod(
        cluster, "replaced", lambda p: ready(p) and len(bought_for(vast_sim, p)) == 2, within=30
    )
    old, new = bought_for(vast_sim, pod)
    assert old["id"] == first and old["destroyed_at"] is not None
    assert new["destroyed_at"] is None
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Outbid"
    assert condition(pod, "DisruptionTarget") == "False"
    assert "BackOff" not in await event_reasons(cluster, pod)


async def test_an_outbid_instance_keeps_its_room_under_the_node_cap(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    """Vast resumes an outbid instance unasked: a second pod that would overshoot the cap
    once it does must wait, though the stopped one bills storage only now."""
    only_3090s(vast_sim)
    await nursery.start(
        serve_node, settings_for(vast_sim.url, cluster.kubeconfig, max_hourly_spend=0.6)
    )
    await outbid_running_pod(vast_sim, cluster, "first", interruptible("wait", grace="1h"))
    await cluster.create(gpu_pod("second", cluster.namespace, annotations=interruptible("wait")))
    await wait_pod(cluster, "second", lambda p: waiting_reason(p) == "SpendCapReached")
    await trio.sleep(1.0)  # several more tries
    assert len(vast_sim.live_instances()) == 1


async def test_a_restarted_node_counts_the_grace_from_the_outbid_not_from_its_start(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    only_3090s(vast_sim)
    settings = settings_for(vast_sim.url, cluster.kubeconfig)
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            _, instance_id = await outbid_running_pod(
                vast_sim, cluster, "kept", interruptible("replace", grace="8s")
            )
            first_run.cancel()
    await trio.sleep(6.0)  # the node is away for most of the grace
    restarted = trio.current_time()
    await nursery.start(serve_node, settings)
    with trio.fail_after(5.0):  # 8 s after the restart without the pod's record of the outbid
        await vast_sim.wait_until(lambda s: s.instance(instance_id) is None)
    assert trio.current_time() - restarted < 5.0
    pod = await wait_pod(cluster, "kept", ready, within=20)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1
