"""What the bench watches while it runs: readiness, pods, Leases, /debug/vars, the ledger."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from contextlib import aclosing

import httpx
import trio

from vk_trio.devtools.bench.processes import STARTUP_SECONDS
from vk_trio.devtools.bench.state import BenchRun
from vk_trio.devtools.bench.workload import LEASES, NAMESPACE, Obj
from vk_trio.kube.api import KubeClient
from vk_trio.kube.models import Pod
from vk_trio.kube.watch import watch_pods
from vk_trio.provider.labels import label_owner


async def wait_ready(run: BenchRun, probe: httpx.AsyncClient) -> None:
    """Wait for a node's ``/readyz``, failing at once if a child process exits meanwhile."""
    with trio.fail_after(STARTUP_SECONDS):
        while True:
            run.check()
            try:
                if (await probe.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


async def fetch_debug_vars(probes: list[httpx.AsyncClient], *, stall_seconds: int = 0) -> Obj:
    """The first node's ``/debug/vars``, with the worst loop stall and collector pauses of
    any node (stalls over the last ``stall_seconds``, or the whole run)."""
    query = {"stall_seconds": stall_seconds} if stall_seconds else {}
    answers: list[Obj] = [(await probe.get("/debug/vars", params=query)).json() for probe in probes]
    stalls = [a["loop_stall"] for a in answers if a.get("loop_stall")]
    worst = max(stalls, key=lambda s: s.get("max_s", 0), default=None)
    pauses = [a["gc"] for a in answers if a.get("gc")]
    worst_gc = max(pauses, key=lambda g: g["gen2"]["max_s"], default=None)
    return {**answers[0], "loop_stall": worst, "gc": worst_gc}


async def follow_pods(run: BenchRun, kube: KubeClient) -> None:
    """Note when each pod is first seen Running, and which pods exist (the nodes' watch)."""
    async with trio.open_nursery() as nursery:
        for node in run.nodes:
            nursery.start_soon(_follow_node, run, kube, node)


async def _follow_node(run: BenchRun, kube: KubeClient, node: str) -> None:
    async with aclosing(watch_pods(kube, node_name=node)) as events:
        async for event in events:
            if event.pod is None:
                continue
            name = event.pod.metadata.name
            if event.type == "DELETED":
                run.present.discard(name)
                continue
            run.present.add(name)
            if event.pod.status.phase == "Running" and name not in run.running:
                run.running[name] = time.time()
            if name not in run.started and _container_running(event.pod):
                run.started[name] = time.time()
            ready = any(
                c.type == "Ready" and c.status == "True" for c in event.pod.status.conditions
            )
            if ready and name not in run.ready:
                run.ready[name] = time.time()
            elif not ready:
                run.ready.pop(name, None)


def _container_running(pod: Pod) -> bool:
    """Whether the pod's (first) container shows ``state.running``."""
    statuses = pod.status.container_statuses
    return bool(statuses) and statuses[0].state.running is not None


async def follow_lease(run: BenchRun, kube: KubeClient, node: str) -> None:
    """Note each renewal of ``node``'s Lease (the node renews it every 10 s; 40 s without
    one and the node goes NotReady), reading it twice a second."""
    renewed = None
    while True:
        lease = await kube.request("GET", f"{LEASES}/{node}")
        run.kube_calls_by_bench += 1
        if lease["spec"].get("renewTime") != renewed:
            renewed = lease["spec"].get("renewTime")
            run.renewals[node].append(time.time())
        await trio.sleep(0.5)


def longest_renewal_gap(renewals: dict[str, list[float]], until: float) -> float | None:
    """The longest time any node went without a renewal seen, up to ``until``."""
    gaps = [
        b - a
        for times in renewals.values()
        if times
        for a, b in itertools.pairwise([*times, until])
    ]
    return round(max(gaps), 1) if gaps else None


async def count_events(kube: KubeClient, reason: str) -> int:
    """Events of ``reason`` in the bench namespace, counting each repeat of a deduplicated one."""
    listed = await kube.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")
    return sum(
        int(e.get("count") or 1) for e in listed.get("items", []) if e.get("reason") == reason
    )


def first_instance_times(ledger: list[Obj], run: BenchRun) -> dict[str, float]:
    """Pod name → wall time the simulator created its first instance."""
    first: dict[str, float] = {}
    for entry in sorted(ledger, key=lambda e: e["start_date"]):
        owners = (label_owner(entry["label"], node) for node in run.nodes)
        owner = next((o for o in owners if o is not None), None)
        name = run.uids.get(owner.uid) if owner else None
        if name is not None and name not in first:
            first[name] = entry["start_date"]
    return first


def deltas(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """``after - before`` per key of ``after`` (a key new in ``after`` counts from 0)."""
    return {k: after[k] - before.get(k, 0.0) for k in after}


def percentile(values: Sequence[float], q: int) -> float | None:
    """The nearest-rank ``q``th percentile, rounded for the report; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(len(ordered) * q / 100) - 1)], 2)
