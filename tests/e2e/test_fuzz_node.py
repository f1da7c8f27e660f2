"""Issue 4, bad input, end to end: the real node (``serve_node``) over the simulators, given a
pod whose annotations are garbage, buys nothing, says why on the pod and in a Warning Event,
and stays healthy (probes answer, a good pod next to it still runs)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.e2e.cluster import SimCluster
from tests.e2e.e2e import (
    bought_for,
    gpu_pod,
    phase,
    settings_for,
    wait_event,
    wait_pod,
    waiting_reason,
)
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim

GARBAGE = {
    "vast.ai/price-max": "9" * 400,
    "vast.ai/disk": "-0x50",
    "vast.ai/memory": "NaN GB",
    "vast.ai/region": "Mars," + "Q" * 5000,
    "vast.ai/min-reliability": "inf%",
    "vast.ai/startup-timeout": "1h1h",
    "vast.ai/gpu_type": "RTX 3060",
    "vast.ai/interruptible": "\x00",
}


async def test_garbage_annotations_buy_nothing_and_leave_the_node_healthy(
    nursery: trio.Nursery, vast_sim: VastSim, kube_sim: KubeSim, kubeconfig: Path
) -> None:
    cluster = SimCluster(kube_sim, kubeconfig)
    node: NodeRuntime = await nursery.start(serve_node, settings_for(vast_sim.url, kubeconfig))
    await cluster.create(gpu_pod("garbage", cluster.namespace, annotations=GARBAGE))

    pod = await wait_pod(cluster, "garbage", lambda p: waiting_reason(p) == "InvalidAnnotation")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    for key in GARBAGE:
        assert key in message, key
    assert len(message) < 3000, "a 5 kB annotation is not echoed whole"
    await wait_event(cluster, pod, "InvalidAnnotation")
    assert vast_sim.ledger() == []

    await cluster.create(gpu_pod("good", cluster.namespace))
    good = await wait_pod(cluster, "good", lambda p: phase(p) == "Running")
    assert len(bought_for(vast_sim, good)) == 1
    assert bought_for(vast_sim, pod) == []
    async with httpx.AsyncClient(base_url=node.health_url) as client:
        for probe in ("/healthz", "/readyz"):
            assert (await client.get(probe)).status_code == 200
    garbage = await cluster.get("pods", cluster.namespace, "garbage")
    assert garbage is not None and waiting_reason(garbage) == "InvalidAnnotation"
