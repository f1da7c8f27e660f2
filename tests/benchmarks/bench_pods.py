"""Benchmark: N pods on one node, end to end, on the simulators. Prints numbers; asserts nothing.

    python -m tests.benchmarks.bench_pods --pods 1000

Vast's rate limits and our pacer are off, so the numbers are vk-trio's own overhead (with
them on, creates alone take 4.5 s each by Vast's rules). Reported: time until every pod is
Running and until every instance is destroyed after deletion, Vast calls by endpoint, list
calls per steady-state sweep (must be the number of pages, not of pods), the worst event-loop
stall, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import trio
from loguru import logger

from tests.pods.test_node import H100_OFFER, gpu_pod, settings_for
from vk_trio.app import serve_node
from vk_trio.sim.kube import KubeSim
from vk_trio.sim.vast import VastSim, VastSimConfig


async def bench(pods: int, boot: float) -> None:
    vast = VastSim(VastSimConfig(boot_seconds=boot, rate_limits="off"))
    vast.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=0.4)] * (pods + 10))
    kube = KubeSim(watch_buffer=100_000)
    stall = 0.0

    async def watchdog() -> None:
        nonlocal stall
        while True:
            expected = trio.current_time() + 0.05
            await trio.sleep(0.05)
            stall = max(stall, trio.current_time() - expected)

    async with trio.open_nursery() as nursery:
        await nursery.start(vast.serve)
        await nursery.start(kube.serve)
        config = Path(tempfile.mkdtemp()) / "kubeconfig"
        kube.write_kubeconfig(config)
        node = await nursery.start(serve_node, settings_for(vast, config, poll_slow=2.0))
        nursery.start_soon(watchdog)

        started = time.perf_counter()
        for i in range(pods):
            kube.create(gpu_pod(f"bench-{i}", "default"))
        created = time.perf_counter() - started

        # Checked 4x a second: a check on every change would copy every pod per change and
        # measure this harness instead of the node.
        while _phases(kube).count("Running") < pods:  # noqa: ASYNC110
            await trio.sleep(0.25)
        to_running = time.perf_counter() - started
        calls_to_running = sum(vast.stats().values())

        await node.poller.fresh()
        sweeps, lists = node.poller.sweeps, vast.stats().get("GET /api/v1/instances/", 0)
        for _ in range(5):
            await node.poller.fresh()
        per_sweep = (vast.stats()["GET /api/v1/instances/"] - lists) / (node.poller.sweeps - sweeps)

        deleting = time.perf_counter()
        for i in range(pods):
            kube.delete("pods", "default", f"bench-{i}", grace_seconds=30)
        while _phases(kube) or vast.live_instances():  # noqa: ASYNC110
            await trio.sleep(0.25)
        to_gone = time.perf_counter() - deleting
        nursery.cancel_scope.cancel()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    leaked = sum(1 for e in vast.ledger() if e["destroyed_at"] is None)
    print(f"pods                         {pods}")
    print(f"simulated boot               {boot:.1f} s")
    print(f"create {pods} pod objects      {created:.2f} s")
    print(f"all Running after            {to_running:.2f} s ({calls_to_running} Vast calls)")
    print(f"list calls per sweep         {per_sweep:.1f} (pages of 25: {(pods + 24) // 25})")
    print(f"all deleted+destroyed after  {to_gone:.2f} s")
    print(f"worst event-loop stall       {stall * 1000:.0f} ms")
    print(f"peak RSS (whole process)     {peak_mb:.0f} MB (simulators included)")
    print(f"instances bought / leaked    {len(vast.ledger())} / {leaked}")
    print("vast calls by endpoint       " + ", ".join(f"{k} {v}" for k, v in vast.stats().items()))


def _phases(kube: KubeSim) -> list[str]:
    return [str(p.get("status", {}).get("phase")) for p in kube.list("pods", "default")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--boot-seconds", type=float, default=2.0)
    args = parser.parse_args()
    logger.remove()
    logger.add(lambda message: None, level="ERROR")
    trio.run(bench, args.pods, args.boot_seconds)


if __name__ == "__main__":
    main()
