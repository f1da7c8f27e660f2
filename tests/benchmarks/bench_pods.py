"""Benchmark: N pods on one node, end to end. Prints numbers; asserts nothing.

    python -m tests.benchmarks.bench_pods --pods 1000

The two simulators run as separate processes (``vk-trio sim vast``, ``vk-trio sim kube``), so
the event-loop stalls and peak memory printed are the node's own (plus this small harness).
Vast's rate limits and the node's pacer are off, so times are vk-trio's overhead (with them
on, creates alone take 4.5 s each by Vast's rules). Reported: time until every pod is
Running and until every instance is destroyed after deletion, Vast calls by endpoint, list
calls per steady-state sweep (must be the number of pages, not of pods), the worst
event-loop stall, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from loguru import logger

from tests.e2e.e2e import H100_OFFER, gpu_pod, settings_for
from vk_trio.app import serve_node
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.sim.vast import VastSim

PODS = "/api/v1/namespaces/default/pods"


@contextmanager
def simulator(*args: str) -> Iterator[str]:
    """Run ``vk-trio sim ...`` in its own process; yield the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vk_trio", "sim", *args, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().decode().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def market_file(folder: Path, pods: int) -> Path:
    """The default seeded market plus enough RTX 3090s for every pod, as an --offers file."""
    market = VastSim()
    market.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=0.4)] * (pods + 10))
    path = folder / "offers.json"
    path.write_text(json.dumps(market.offers()))
    return path


async def bench(pods: int, boot: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="vk-bench-"))
    kubeconfig = folder / "kubeconfig"
    vast_args = ["vast", "--rate-limits", "off", "--boot-seconds", str(boot)]
    with (
        simulator(*vast_args, "--offers", str(market_file(folder, pods))) as vast_url,
        simulator("kube", "--kubeconfig-out", str(kubeconfig)),
    ):
        await measure(pods, boot, vast_url, kubeconfig)


async def measure(pods: int, boot: float, vast_url: str, kubeconfig: Path) -> None:
    stall = 0.0

    async def watchdog() -> None:
        nonlocal stall
        while True:
            expected = trio.current_time() + 0.05
            await trio.sleep(0.05)
            stall = max(stall, trio.current_time() - expected)

    async with (
        KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as kube,
        httpx.AsyncClient(base_url=vast_url) as sim,
        trio.open_nursery() as nursery,
    ):

        async def phases() -> list[str]:
            listed = await kube.request("GET", PODS)
            return [str(p.get("status", {}).get("phase")) for p in listed["items"]]

        async def stats() -> dict[str, int]:
            answer: dict[str, int] = (await sim.get("/_sim/stats")).json()
            return answer

        settings = settings_for(vast_url, kubeconfig, poll_slow=2.0)
        node = await nursery.start(serve_node, settings)
        nursery.start_soon(watchdog)

        started = time.perf_counter()
        for i in range(pods):
            await kube.request("POST", PODS, json=gpu_pod(f"bench-{i}", "default"))
        created = time.perf_counter() - started
        while (await phases()).count("Running") < pods:  # noqa: ASYNC110
            await trio.sleep(0.5)
        to_running = time.perf_counter() - started
        # keys are "METHOD /path" plus "METHOD /path STATUS" for errors: count requests once
        requests = (await stats()).items()
        calls_to_running = sum(v for k, v in requests if not k.split()[-1].isdigit())

        await node.poller.fresh()
        sweeps, lists = node.poller.sweeps, (await stats())["GET /api/v1/instances/"]
        for _ in range(5):
            await node.poller.fresh()
        per_sweep = ((await stats())["GET /api/v1/instances/"] - lists) / (
            node.poller.sweeps - sweeps
        )

        deleting = time.perf_counter()
        for i in range(pods):
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 30}
            await kube.request("DELETE", f"{PODS}/bench-{i}", json=body)
        ledger: list[dict[str, Any]] = []
        while await phases() or any(e["destroyed_at"] is None for e in ledger) or not ledger:
            await trio.sleep(0.5)
            ledger = (await sim.get("/_sim/ledger")).json()
        to_gone = time.perf_counter() - deleting
        calls = await stats()
        nursery.cancel_scope.cancel()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    leaked = sum(1 for e in ledger if e["destroyed_at"] is None)
    print(f"pods                         {pods}")
    print(f"simulated boot               {boot:.1f} s")
    print(f"create {pods} pod objects      {created:.2f} s")
    print(f"all Running after            {to_running:.2f} s ({calls_to_running} Vast calls)")
    print(f"list calls per sweep         {per_sweep:.1f} (pages of 25: {(pods + 24) // 25})")
    print(f"all deleted+destroyed after  {to_gone:.2f} s")
    print(f"worst event-loop stall       {stall * 1000:.0f} ms (the node's process)")
    print(f"peak RSS                     {peak_mb:.0f} MB (the node's process)")
    print(f"instances bought / leaked    {len(ledger)} / {leaked}")
    print("vast calls by endpoint       " + ", ".join(f"{k} {v}" for k, v in calls.items()))


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
