"""Benchmark: N pods, each probed (readiness and liveness, httpGet), on one node. Prints numbers.

    python -m tests.benchmarks.bench_probes --pods 200 --period 1 --steady 40

The simulators run as separate processes; the Vast one with ``--serve-ports``, so every
instance's app really answers on 127.0.0.1 (503 for ``--app-ready-after`` seconds, then 200)
and every probe is a real TCP connection and HTTP exchange made by the node under test. Once
every pod is Ready, the node is left probing for ``--steady`` seconds while this measures the
worst event-loop stall (a 50 ms ticker in the node's loop) and the longest gap between two
renewals of the node's Lease (renewed every 10 s; the node goes NotReady after 40 s without).
Exits 1 when the stall reaches 50 ms or a renewal is late.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from loguru import logger

from tests.benchmarks.bench_pods import market_file, simulator
from tests.e2e.e2e import NODE, gpu_pod, settings_for
from vk_trio.app import serve_node
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config

PODS = "/api/v1/namespaces/default/pods"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
STALL_LIMIT = 0.050
RENEW_LIMIT = 15.0
"""The Lease is renewed every 10 s; a gap past this means a renewal was late."""


def probed_pod(name: str, period: int) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": period}
    pod = gpu_pod(name, "default")
    [container] = pod["spec"]["containers"]
    container["readinessProbe"] = probe
    container["livenessProbe"] = {**probe, "initialDelaySeconds": 30, "failureThreshold": 3}
    return pod


async def bench(pods: int, period: int, steady: float, ready_after: float) -> bool:
    folder = Path(tempfile.mkdtemp(prefix="vk-bench-probes-"))
    kubeconfig = folder / "kubeconfig"
    vast_args = [
        *("vast", "--rate-limits", "off", "--boot-seconds", "2"),
        *("--serve-ports", "--app-ready-after", str(ready_after)),
        *("--offers", str(market_file(folder, pods))),
    ]
    with simulator(*vast_args) as vast_url, simulator("kube", "--kubeconfig-out", str(kubeconfig)):
        return await measure(pods, period, steady, vast_url, kubeconfig)


class SlowSteps(trio.abc.Instrument):
    """The longest task steps (a step that does not yield is what stalls the loop), in CPU
    time of the loop's thread: wall time would also count the OS running other processes."""

    def __init__(self) -> None:
        self.started = 0.0
        self.worst: list[tuple[float, str]] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.thread_time() - self.started
        if len(self.worst) < 5 or took > self.worst[0][0]:
            self.worst = sorted([*self.worst, (took, task.name)])[-5:]


class Collections:
    """Pauses of the cyclic garbage collector, by generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.worst = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.worst[generation] = max(self.worst[generation], time.perf_counter() - self.started)


def collections_census() -> str:
    """How many objects a full collection walks, and the commonest types among them."""
    kinds = Counter(type(o).__name__ for o in gc.get_objects())
    top = ", ".join(f"{name} {n}" for name, n in kinds.most_common(6))
    return f"{kinds.total()} ({top})"


async def measure(pods: int, period: int, steady: float, vast_url: str, kubeconfig: Path) -> bool:
    stall = 0.0
    steps = SlowSteps()
    collections = Collections()
    renewals: list[float] = []

    async def watchdog() -> None:
        nonlocal stall
        while True:
            expected = trio.current_time() + 0.05
            await trio.sleep(0.05)
            stall = max(stall, trio.current_time() - expected)

    async with (
        KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as kube,
        trio.open_nursery() as nursery,
    ):

        async def lease_watcher() -> None:
            last = None
            while True:
                lease = await kube.request("GET", LEASE)
                renewed = lease["spec"].get("renewTime")
                if renewed != last:
                    last = renewed
                    renewals.append(time.perf_counter())
                await trio.sleep(0.5)

        async def counts() -> tuple[int, int]:
            items = (await kube.request("GET", PODS))["items"]
            running = sum(1 for p in items if p.get("status", {}).get("phase") == "Running")
            ready = sum(
                1
                for p in items
                for c in p.get("status", {}).get("conditions") or []
                if c["type"] == "Ready" and c["status"] == "True"
            )
            return running, ready

        await nursery.start(serve_node, settings_for(vast_url, kubeconfig, poll_slow=2.0))
        nursery.start_soon(lease_watcher)
        started = time.perf_counter()
        for i in range(pods):
            await kube.request("POST", PODS, json=probed_pod(f"probed-{i}", period))
        running_at = None
        while (state := await counts())[1] < pods:
            if running_at is None and state[0] == pods:
                running_at = time.perf_counter() - started
            await trio.sleep(0.5)
        ready_at = time.perf_counter() - started
        stall, renewals[:] = 0.0, renewals[-1:]
        trio.lowlevel.add_instrument(steps)
        gc.callbacks.append(collections)
        nursery.start_soon(watchdog)
        steady_from = time.perf_counter()
        await trio.sleep(steady)
        trio.lowlevel.remove_instrument(steps)
        gc.callbacks.remove(collections)
        measured_stall = stall  # before this harness decodes every pod below
        tracked = collections_census()
        still_ready = (await counts())[1]
        renewals.append(time.perf_counter())
        nursery.cancel_scope.cancel()

    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    worst_gap = max(gaps, default=float("inf"))
    probes = 2 * pods * steady / period
    print(f"pods (readiness + liveness)  {pods}, every {period} s")
    print(f"all Running after            {running_at or 0:.1f} s")
    print(f"all Ready after              {ready_at:.1f} s")
    probed_for = time.perf_counter() - steady_from
    print(f"steady probing               {probed_for:.0f} s, ~{probes:.0f} probes")
    print(f"still Ready at the end       {still_ready}/{pods}")
    limit = STALL_LIMIT * 1000
    print(f"worst event-loop stall       {measured_stall * 1000:.1f} ms (limit {limit:.0f})")
    slowest = ", ".join(f"{t * 1000:.0f} ms {name}" for t, name in reversed(steps.worst))
    print(f"slowest task steps (CPU)     {slowest}")
    pauses = ", ".join(
        f"gen{g} {n}x worst {w * 1000:.0f} ms"
        for g, (n, w) in enumerate(zip(collections.count, collections.worst, strict=True))
    )
    print(f"garbage collections          {pauses}")
    print(f"objects the collector tracks {tracked}")
    print(f"Lease renewals seen          {len(renewals) - 1}, longest gap {worst_gap:.1f} s")
    return measured_stall < STALL_LIMIT and worst_gap < RENEW_LIMIT and still_ready == pods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--period", type=int, default=1, help="periodSeconds of both probes")
    parser.add_argument("--steady", type=float, default=40.0, help="seconds of probing measured")
    parser.add_argument("--app-ready-after", type=float, default=5.0)
    args = parser.parse_args()
    logger.remove()
    logger.add(lambda message: None, level="ERROR")
    ok = trio.run(bench, args.pods, args.period, args.steady, args.app_ready_after)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
