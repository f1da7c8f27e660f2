"""A namespace budget across three nodes (issue 23, part 3), end to end: three real
``serve_node``s share one Vast simulator and one stand-in; twenty pods of a namespace capped
at $1/h, at $0.30/h each, are created at once. What was paid for is read from the simulator's
ledger (every instance ever created, with its create and destroy times): never more than three
alive at any moment, including after a node is killed while a pod of it is deleted, and when
that node comes back and cleans up after it. And a malformed budget: nothing bought, a one-line
reason on the pod, until it is fixed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from tests.e2e.e2e import H100_OFFER, gpu_pod, settings_for, waiting_reason
from vk_trio.annotations import NAMESPACE_HOLDS, NAMESPACE_MAX_HOURLY, NAMESPACE_MAX_INSTANCES
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.provider.namespace_budget import NAMESPACE_BUDGET_REACHED

NS = "team"
NODES = ("vk-ns-a", "vk-ns-b", "vk-ns-c")
PODS = 20
CAP = 3  # instances at $0.30/h that fit in $1/h
Obj = dict[str, Any]


def most_alive_at_once(ledger: list[Obj]) -> int:
    """The largest number of instances alive together, from their create/destroy times."""
    most = 0
    for row in ledger:
        at = row["created_at"]
        alive = sum(
            1
            for other in ledger
            if other["created_at"] <= at
            and (other["destroyed_at"] is None or other["destroyed_at"] > at)
        )
        most = max(most, alive)
    return most


def team_pod(index: int) -> Obj:
    pod = gpu_pod(
        f"p{index:02}",
        NS,
        annotations={"vast.ai/gpu-type": "RTX 3090", "vast.ai/gpu-fallbacks": ""},
    )
    pod["spec"]["nodeName"] = NODES[index % len(NODES)]
    return pod


def pods_by_reason(kube_sim: KubeSim) -> dict[str, list[Obj]]:
    grouped: dict[str, list[Obj]] = {}
    for pod in kube_sim.list("pods", NS):
        phase = pod.get("status", {}).get("phase")
        key = "Running" if phase == "Running" else str(waiting_reason(pod))
        grouped.setdefault(key, []).append(pod)
    return grouped


class Node:
    """One in-process node that can be killed (its scope cancelled: no destroy, no release,
    as a SIGTERM or a lost machine leaves it) and started again under the same name."""

    def __init__(self, name: str, vast_url: str, kubeconfig: Path) -> None:
        self.settings = settings_for(vast_url, kubeconfig, node_name=name)
        self.scope = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[NodeRuntime]) -> None:
        self.scope = trio.CancelScope()
        with self.scope:
            await serve_node(self.settings, task_status=task_status)


async def settle(kube_sim: KubeSim, check: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        await kube_sim.wait_until(lambda _: check())


async def test_three_nodes_never_rent_beyond_the_namespace_cap_even_when_one_dies(
    nursery: trio.Nursery, vast_sim: VastSim, kube_sim: KubeSim, kubeconfig: Path
) -> None:
    vast_sim.remove_offers(lambda row: row.get("gpu_name") == "RTX 3090")
    vast_sim.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=0.30)] * 30)
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NS, "annotations": {NAMESPACE_MAX_HOURLY: "1.00"}},
        }
    )
    nodes = [Node(name, str(vast_sim.url), kubeconfig) for name in NODES]
    for node in nodes:
        await nursery.start(node.run)

    for index in range(PODS):  # all at once: three nodes decide at the same moment
        kube_sim.create(team_pod(index))

    def three_run_the_rest_wait() -> bool:
        grouped = pods_by_reason(kube_sim)
        return (
            len(grouped.get("Running", [])) == CAP
            and len(grouped.get(NAMESPACE_BUDGET_REACHED, [])) == PODS - CAP
        )

    await settle(kube_sim, three_run_the_rest_wait, within=20)
    await trio.sleep(1.5)  # three more slow sweeps of every waiting pod asking again
    assert three_run_the_rest_wait()
    assert len(vast_sim.ledger()) == CAP and len(vast_sim.live_instances()) == CAP
    waiting = pods_by_reason(kube_sim)[NAMESPACE_BUDGET_REACHED][0]
    message = waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert f"namespace {NS}" in message and "$1.000/h" in message, message

    # A node dies (its process gone: nothing destroyed, nothing released) and, while it is
    # down, its running pod is force-deleted: the instance still bills, so its hold counts.
    running = pods_by_reason(kube_sim)["Running"]
    victim_pod = running[0]
    dead = next(n for n in nodes if n.settings.node_name == victim_pod["spec"]["nodeName"])
    dead.scope.cancel()
    kube_sim.delete("pods", NS, victim_pod["metadata"]["name"], grace_seconds=0)
    await trio.sleep(2.0)  # four slow sweeps of the two nodes left
    assert len(vast_sim.ledger()) == CAP and len(vast_sim.live_instances()) == CAP
    namespace = kube_sim.get("namespaces", None, NS)
    assert namespace is not None
    holds = msgspec.json.decode(namespace["metadata"]["annotations"][NAMESPACE_HOLDS])
    assert victim_pod["metadata"]["uid"] in holds[dead.settings.node_name]

    # The node comes back: its reaper destroys the orphan, it drops the stale hold, and one
    # waiting pod (of any node) takes the room; never four at once.
    await nursery.start(dead.run)

    def orphan_replaced() -> bool:
        return len(vast_sim.ledger()) == CAP + 1 and len(vast_sim.live_instances()) == CAP

    with trio.fail_after(20):
        await vast_sim.wait_until(lambda _: orphan_replaced())
    await settle(
        kube_sim,
        lambda: len(pods_by_reason(kube_sim).get(NAMESPACE_BUDGET_REACHED, [])) == PODS - CAP - 1,
        within=10,
    )
    await trio.sleep(1.0)
    ledger = vast_sim.ledger()
    assert most_alive_at_once(ledger) == CAP, ledger
    assert len(ledger) == CAP + 1 and len(vast_sim.live_instances()) == CAP
    assert sum(i["dph_total"] for i in vast_sim.live_instances()) <= 1.0
    nursery.cancel_scope.cancel()


async def test_a_malformed_budget_buys_nothing_and_says_why_until_fixed(
    nursery: trio.Nursery, vast_sim: VastSim, kube_sim: KubeSim, kubeconfig: Path
) -> None:
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NS, "annotations": {NAMESPACE_MAX_INSTANCES: "two"}},
        }
    )
    node = Node(NODES[0], str(vast_sim.url), kubeconfig)
    await nursery.start(node.run)
    kube_sim.create(team_pod(0))

    def shown() -> Obj | None:
        pod = kube_sim.get("pods", NS, "p00")
        return pod if pod is not None and waiting_reason(pod) == "InvalidAnnotation" else None

    await settle(kube_sim, lambda: shown() is not None, within=10)
    pod = shown()
    assert pod is not None
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert f'namespace {NS}: {NAMESPACE_MAX_INSTANCES} "two"' in message and "\n" not in message
    events = [e for e in kube_sim.list("events", NS) if e["reason"] == "InvalidAnnotation"]
    assert events and '"two"' in events[0]["message"]
    assert vast_sim.ledger() == []

    kube_sim.patch(
        "namespaces", None, NS, {"metadata": {"annotations": {NAMESPACE_MAX_INSTANCES: "2"}}}
    )

    def running() -> bool:
        pod = kube_sim.get("pods", NS, "p00")
        return pod is not None and pod.get("status", {}).get("phase") == "Running"

    await settle(kube_sim, running, within=15)
    assert len(vast_sim.ledger()) == 1
    nursery.cancel_scope.cancel()
