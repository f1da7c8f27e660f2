"""What ``kubectl describe node`` and /metrics show: spend that matches what the Vast
simulator bills (/metrics in the Prometheus text format, read back with prometheus_client's
parser, and the Node's ``vast.ai/spend-per-hour`` annotation), and the Node's Events."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import Cluster, RemoteCluster
from tests.e2e.e2e import NODE, gpu_pod, phase, wait_pod
from vk_trio.annotations import NODE_SPEND
from vk_trio.app import NodeRuntime
from vk_trio.devtools.sim.kube import SERVER_VERSION
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.version import ServerVersion, get_server_version, kubelet_version


def samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                found[sample.name] = sample.value
    return found


async def test_metrics_and_the_node_show_what_vast_bills(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    for name in ("spend-a", "spend-b"):
        await cluster.create(gpu_pod(name, cluster.namespace))
    for name in ("spend-a", "spend-b"):
        await wait_pod(cluster, name, lambda p: phase(p) == "Running")
    await node.poller.fresh()
    billed = sum(row["dph_total"] for row in vast_sim.live_instances())
    assert billed > 0
    async with httpx.AsyncClient(base_url=node.health_url) as client:
        first = samples((await client.get("/metrics")).text)
        await trio.sleep(1.0)
        second = samples((await client.get("/metrics")).text)
    assert abs(first["vk_trio_spend_dollars_per_hour"] - billed) < 1e-6
    ledger = sum(row["cost"] for row in vast_sim.ledger())
    assert 0 < second["vk_trio_spent_dollars_total"] <= ledger + 1e-9  # never more than was billed
    assert (
        second["vk_trio_spent_dollars_total"] > first["vk_trio_spent_dollars_total"]
    )  # still accruing

    async def annotated() -> str | None:
        node_object = await cluster.get("nodes", None, NODE)
        annotations = (node_object or {}).get("metadata", {}).get("annotations", {})
        value: str | None = annotations.get(NODE_SPEND)
        return value if value and abs(float(value) - billed) < 1e-3 else None

    with trio.fail_after(10):
        await cluster.wait_for(annotated)


async def test_describe_node_shows_its_events(node: NodeRuntime, cluster: Cluster) -> None:
    """Starting at registration, as the kubelet does; readiness changes follow."""

    async def started() -> list[str] | None:
        events = await cluster.list("events", "default")
        reasons = [
            e["reason"]
            for e in events
            if e.get("involvedObject", {}).get("kind") == "Node"
            and e["involvedObject"].get("name") == NODE
        ]
        return reasons if "Starting" in reasons else None

    with trio.fail_after(10):
        reasons = await cluster.wait_for(started)
    assert "Starting" in reasons


async def test_the_node_reports_the_api_servers_minor(node: NodeRuntime, cluster: Cluster) -> None:
    """``kubectl get nodes`` shows a kubelet of the cluster's own minor, not a fixed one."""
    if isinstance(cluster, RemoteCluster):
        server = await get_server_version(cluster.client)
    else:
        server = ServerVersion(major=SERVER_VERSION["major"], minor=SERVER_VERSION["minor"])
    node_object = await cluster.get("nodes", None, NODE)
    assert node_object is not None
    reported = node_object["status"]["nodeInfo"]["kubeletVersion"]
    assert reported == kubelet_version(server)
    assert reported.startswith(f"v{server.major}.{server.minor.rstrip('+')}.0-vk-trio-")
