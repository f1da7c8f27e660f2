"""The load the bench puts on the node: N pods created and deleted at once, and the seed's
per-pod polling (``--baseline``) to compare against."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio

from vk_trio.devtools.bench.observe import deltas
from vk_trio.devtools.bench.state import BenchRun
from vk_trio.devtools.bench.workload import API_KEY, PODS, Obj, bench_pod
from vk_trio.kube.api import KubeClient


async def _each(count: int, action: Callable[[int], Any], *, parallel: int = 32) -> None:
    limiter = trio.CapacityLimiter(parallel)

    async def one(i: int) -> None:
        async with limiter:
            await action(i)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)


async def create_pods(run: BenchRun, kube: KubeClient) -> None:
    """Create the run's pods, spread round-robin over its nodes, noting when each was posted."""

    async def create(i: int) -> None:
        name = f"bench-{i}"
        node = run.nodes[i % len(run.nodes)]
        created = await kube.request(
            "POST",
            PODS,
            json=bench_pod(name, node, probe_period=run.args.probes, agent=run.args.agent),
        )
        run.posted[name] = time.time()
        run.uids[created["metadata"]["uid"]] = name

    run.kube_calls_by_bench += run.pods
    await _each(run.pods, create)


async def delete_pods(run: BenchRun, kube: KubeClient) -> None:
    """Delete the run's pods (30 s grace, as kubectl's default), 32 requests at a time."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 30}

    async def delete(i: int) -> None:
        await kube.request("DELETE", f"{PODS}/bench-{i}", json=body)

    run.kube_calls_by_bench += run.pods
    await _each(run.pods, delete)


async def measure_seed_polling(
    run: BenchRun,
    vast: httpx.AsyncClient,
    ledger: list[Obj],
    steady_calls: dict[str, float],
    steady_cores: dict[str, float],
) -> Obj:
    """Poll each pod's instance as the seed did, for a hold's length; compare."""
    live = [e["id"] for e in ledger if e["destroyed_at"] is None]
    interval, hold = run.args.baseline_interval, run.args.hold
    headers = {"Authorization": f"Bearer {API_KEY}"}
    calls = 0
    errors = 0

    async def poll(k: int, instance_id: int) -> None:
        nonlocal calls, errors
        await trio.sleep(interval * k / len(live))  # spread evenly, as N timers would be
        while True:
            response = await vast.get(f"/api/v0/instances/{instance_id}/", headers=headers)
            calls += 1
            errors += response.status_code != 200
            await trio.sleep(interval)

    bench_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_0, t_0 = run.cpu(), time.time()
    with trio.move_on_after(hold):
        async with trio.open_nursery() as nursery:
            for k, instance_id in enumerate(live):
                nursery.start_soon(poll, k, instance_id)
    elapsed = time.time() - t_0
    cpu = {k: v / elapsed for k, v in deltas(run.cpu(), cpu_0).items()}
    after = resource.getrusage(resource.RUSAGE_SELF)
    poller_cores = (after.ru_utime + after.ru_stime - bench_cpu.ru_utime - bench_cpu.ru_stime) / (
        elapsed
    )
    ours = sum(steady_calls.values())
    per_minute = calls / (elapsed / 60)
    return {
        "interval_s": interval,
        "seed_calls_per_min": round(len(live) * 60 / interval, 1),
        # what the bench managed to send: less than the seed's rate when the machine (or
        # the bench itself) cannot keep up
        "vast_calls_per_min": round(per_minute, 1),
        "errors": errors,
        "ours_vast_calls_per_min": ours,
        "calls_ratio": round(per_minute / ours, 1) if ours else None,
        "vast_sim_cores": round(cpu.get("vast sim", 0.0) - steady_cores.get("vast sim", 0.0), 4),
        "ours_vast_sim_cores": round(steady_cores.get("vast sim", 0.0), 4),
        "poller_cores": round(poller_cores, 4),
        "ours_node_cores": round(steady_cores.get("node", 0.0), 4),
    }
