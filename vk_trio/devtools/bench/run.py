"""One pod count's run, as phases: start the processes, ramp N pods to Running, hold them,
delete them all; then the report, one flat dict of measures (``--json``, the table)."""

from __future__ import annotations

import argparse
import base64
import itertools
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
import yaml

from vk_trio.devtools.bench.load import create_pods, delete_pods, measure_seed_polling
from vk_trio.devtools.bench.observe import (
    count_events,
    deltas,
    fetch_debug_vars,
    first_instance_times,
    follow_lease,
    follow_pods,
    longest_renewal_gap,
    percentile,
    wait_ready,
)
from vk_trio.devtools.bench.processes import (
    free_port,
    pin_to_node_cpu,
    spawn,
    start_sim,
    stop_process,
)
from vk_trio.devtools.bench.state import BenchRun
from vk_trio.devtools.bench.workload import API_KEY, APP_READY_AFTER, Obj, market_file
from vk_trio.devtools.sim.vast.agent import AGENT_PATH
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config


async def bench_pod_count(pods: int, args: argparse.Namespace, folder: Path) -> Obj:
    """Measure one pod count end to end; every child process is stopped whatever happens."""
    run = BenchRun(pods, args, folder)
    try:
        return await _measure(run)
    finally:
        await stop_children(run)


async def stop_children(run: BenchRun) -> None:
    """Stop the run's processes, last started first.

    Waiting for a child to exit blocks: off the Trio thread, and finished even when the
    bench is interrupted, so no simulator or node outlives it."""
    with trio.CancelScope(shield=True):
        for process in reversed(run.children.values()):
            await trio.to_thread.run_sync(stop_process, process)


async def _measure(run: BenchRun) -> Obj:
    """Start everything, then ramp, hold and delete, measuring each phase; the report."""
    urls = await start_processes(run)
    async with AsyncExitStack() as stack:
        clients = await Clients.open(stack, urls)
        async with trio.open_nursery() as nursery:
            idle_rss = await wait_nodes_ready(run, clients)
            nursery.start_soon(follow_pods, run, clients.kube)
            ramp = await _ramp(run, clients)
            hold = await _hold(run, clients)
            deleted = await delete_all(run, clients)
            nursery.cancel_scope.cancel()
    return _report(run, idle_rss, ramp, hold, deleted)


# -- start ----------------------------------------------------------------------------------


@dataclass
class _Urls:
    vast: str
    kube: str | None
    """The stand-in's URL; None with ``--kubeconfig`` (a real cluster: no ``/_sim/stats``)."""
    kubeconfig: str
    healths: list[str]
    """Each node's health server (``/readyz``, ``/debug/vars``)."""


async def start_processes(run: BenchRun) -> _Urls:
    vast = await _start_vast_sim(run)
    kubeconfig, kube, client_ca = run.args.kubeconfig, None, None
    if kubeconfig is None:
        kubeconfig = str(run.folder / "kubeconfig")
        process, kube = await start_sim(run.folder, "kube", "--kubeconfig-out", kubeconfig)
        run.children["kube sim"] = process
        client_ca = _cluster_ca(run.folder, kubeconfig)
    healths = [
        _start_node(run, i, node, vast, kubeconfig, client_ca) for i, node in enumerate(run.nodes)
    ]
    return _Urls(vast, kube, kubeconfig, healths)


def _cluster_ca(folder: Path, kubeconfig: str) -> str:
    """The stand-in's cluster CA as a file, for the node's ``CLIENT_CA_FILE``: the stand-in
    serves plain http, so the node's kubeconfig loader keeps no CA, and without one the
    kubelet API (exec, logs) would refuse the stand-in's kubelet-client certificate."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    ca_data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    path = folder / "cluster-ca.crt"
    path.write_bytes(base64.b64decode(ca_data))
    return str(path)


async def _start_vast_sim(run: BenchRun) -> str:
    args = run.args
    process, url = await start_sim(
        run.folder,
        "vast",
        *("--rate-limits", _limits(args), "--boot-seconds", str(args.boot_seconds)),
        *("--api-key", API_KEY, "--offers", str(market_file(run.folder, run.pods))),
        *(("--serve-ports", "--app-ready-after", str(APP_READY_AFTER)) if args.probes else ()),
        *(("--run-containers",) if args.agent else ()),
        *(("--serve-file", f"{AGENT_PATH}={args.agent_binary}") if args.agent_binary else ()),
    )
    run.children["vast sim"] = process
    return url


def _start_node(
    run: BenchRun, i: int, node: str, vast_url: str, kubeconfig: str, client_ca: str | None
) -> str:
    """``vk-trio run`` as ``node``, production defaults; returns its health server's URL."""
    health_port = free_port()
    env = {
        **os.environ,
        "NODE_NAME": node,
        "VAST_API_KEY": API_KEY,
        "VAST_API_URL": vast_url,
        "KUBECONFIG": kubeconfig,
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(health_port),
        # the kubelet API too, on loopback: never 0.0.0.0:10250 on someone's machine
        "KUBELET_HOST": "127.0.0.1",
        "KUBELET_PORT": str(free_port()),
        "POD_IP": "127.0.0.1",
        **({"CLIENT_CA_FILE": client_ca} if client_ca else {}),
    }
    flags = [] if run.args.real_limits else ["--pacing=0"]
    if run.args.agent:  # the simulator serves the agent; the node reads its digest at start
        flags.append(f"--agent-url={vast_url}{AGENT_PATH}")
    name, log = ("node", "node.log") if len(run.nodes) == 1 else (f"node {i}", f"{node}.log")
    run.children[name] = spawn(
        [sys.executable, "-m", "vk_trio", "run", *flags], out=None, log=run.folder / log, env=env
    )
    if getattr(run.args, "pin_node", False):
        pin_to_node_cpu(run.children[name].pid)
    return f"http://127.0.0.1:{health_port}"


def _limits(args: argparse.Namespace) -> str:
    return "real" if args.real_limits else "off"


@dataclass
class Clients:
    kube: KubeClient
    vast: httpx.AsyncClient
    probes: list[httpx.AsyncClient]
    """One per node, on its health server."""
    kube_sim: httpx.AsyncClient | None

    @classmethod
    async def open(cls, stack: AsyncExitStack, urls: _Urls) -> Clients:
        async def client(url: str, seconds: float = 60) -> httpx.AsyncClient:
            return await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=seconds))

        config = await load_config(kubeconfig=urls.kubeconfig)
        kube = await stack.enter_async_context(KubeClient.from_config(config))
        vast = await client(urls.vast)
        probes = [await client(health, seconds=10) for health in urls.healths]
        kube_sim = await client(urls.kube) if urls.kube is not None else None
        return cls(kube, vast, probes, kube_sim)

    async def vast_stats(self) -> Counter[str]:
        return Counter((await self.vast.get("/_sim/stats")).json())

    async def kube_stats(self) -> Counter[str] | None:
        if self.kube_sim is None:
            return None
        return Counter((await self.kube_sim.get("/_sim/stats")).json())

    async def ledger(self) -> list[Obj]:
        ledger: list[Obj] = (await self.vast.get("/_sim/ledger")).json()
        return ledger


async def wait_nodes_ready(run: BenchRun, clients: Clients) -> int:
    """Wait for every node's ``/readyz``, let them settle; their RSS, idle (KiB)."""
    for probe in clients.probes:
        await wait_ready(run, probe)
    await trio.sleep(2.0)
    idle_rss, _ = run.rss_kb()
    return idle_rss


# -- ramp: N pods at once -------------------------------------------------------------------


@dataclass
class _Ramp:
    kube_before: Counter[str] | None
    created_s: float
    to_running_s: float
    to_ready_s: float | None
    cpu: dict[str, float]
    running_rss: int


async def _ramp(run: BenchRun, clients: Clients) -> _Ramp:
    kube_before = await clients.kube_stats()
    cpu_before = run.cpu()
    started = time.time()
    await create_pods(run, clients.kube)
    created = time.time() - started
    await until(run, lambda: len(run.running) >= run.pods, interval=0.2)
    to_running = time.time() - started
    to_ready = None
    if run.args.probes:
        await until(run, lambda: len(run.ready) >= run.pods, interval=0.2)
        to_ready = time.time() - started
    cpu = deltas(run.cpu(), cpu_before)
    running_rss, _ = run.rss_kb()
    return _Ramp(kube_before, created, to_running, to_ready, cpu, running_rss)


async def until(run: BenchRun, done: Callable[[], bool], *, interval: float) -> None:
    """Poll ``done`` until it holds (``--timeout`` at most), failing when a child exits."""
    with trio.fail_after(run.args.timeout):
        while not done():
            run.check()
            await trio.sleep(interval)


# -- hold: steady state (probing, with --probes) --------------------------------------------


@dataclass
class _Hold:
    seconds: float
    ended_at: float
    still_ready: int
    steady_calls: dict[str, float]
    """Vast calls per minute, by endpoint."""
    steady_cores: dict[str, float]
    held_rss: int
    baseline: Obj | None
    debug_vars: Obj


async def _hold(run: BenchRun, clients: Clients) -> _Hold:
    stats_0, cpu_0, t_0 = await clients.vast_stats(), run.cpu(), time.time()
    async with trio.open_nursery() as holding:
        for node in run.nodes:
            holding.start_soon(follow_lease, run, clients.kube, node)
        await trio.sleep(run.args.hold)
        holding.cancel_scope.cancel()
    stats_1, cpu_1, t_1 = await clients.vast_stats(), run.cpu(), time.time()
    minutes = (t_1 - t_0) / 60
    steady_calls = {k: round(v / minutes, 1) for k, v in (stats_1 - stats_0).items() if v}
    steady_cores = {k: v / (t_1 - t_0) for k, v in deltas(cpu_1, cpu_0).items()}
    held_rss, _ = run.rss_kb()
    baseline = None
    if run.args.baseline:
        ledger = await clients.ledger()
        baseline = await measure_seed_polling(run, clients.vast, ledger, steady_calls, steady_cores)
    return _Hold(
        seconds=t_1 - t_0,
        ended_at=t_1,
        still_ready=sum(1 for name in run.ready if name in run.present),
        steady_calls=steady_calls,
        steady_cores=steady_cores,
        held_rss=held_rss,
        baseline=baseline,
        debug_vars=await fetch_debug_vars(clients.probes, stall_seconds=math.floor(t_1 - t_0)),
    )


# -- delete all at once ---------------------------------------------------------------------


@dataclass
class Deleted:
    seconds: float
    cpu: dict[str, float]
    ledger: list[Obj]
    """The simulator's ledger once every instance is destroyed: the whole run's."""
    kube_after: Counter[str] | None
    vast_stats: Counter[str]
    destroy_failed: int
    debug_vars: Obj
    peak_rss: int


async def delete_all(run: BenchRun, clients: Clients) -> Deleted:
    started, cpu_before = time.time(), run.cpu()
    await delete_pods(run, clients.kube)
    ledger: list[Obj] = []

    async def all_destroyed() -> bool:
        nonlocal ledger
        ledger = await clients.ledger()
        return not run.present and all(e["destroyed_at"] is not None for e in ledger)

    with trio.fail_after(run.args.timeout):
        while True:
            run.check()
            if await all_destroyed():
                break
            await trio.sleep(0.5)
    seconds = time.time() - started
    cpu = deltas(run.cpu(), cpu_before)
    return Deleted(
        seconds=seconds,
        cpu=cpu,
        ledger=ledger,
        kube_after=await clients.kube_stats(),
        vast_stats=await clients.vast_stats(),
        destroy_failed=await count_events(clients.kube, "DestroyFailed"),
        debug_vars=await fetch_debug_vars(clients.probes),
        peak_rss=run.rss_kb()[1],
    )


# -- the report -----------------------------------------------------------------------------


def _report(run: BenchRun, idle_rss: int, ramp: _Ramp, hold: _Hold, deleted: Deleted) -> Obj:
    """The run's measures, one flat dict (keys in the order the JSON has always had)."""
    args, n, ledger = run.args, run.pods, deleted.ledger
    per_pod = [run.running[p] - run.posted[p] for p in run.running]
    first_instance = first_instance_times(ledger, run)
    bound_to_create = [start - run.posted[name] for name, start in first_instance.items()]
    instance_to_running = [
        run.running[name] - (start + args.boot_seconds)
        for name, start in first_instance.items()
        if name in run.running
    ]
    gaps = [b - a for a, b in itertools.pairwise(sorted(e["start_date"] for e in ledger))]
    kube_calls, kube_by_endpoint = _kube_calls(run, ramp.kube_before, deleted.kube_after)
    hold_vars, end_vars = hold.debug_vars, deleted.debug_vars
    return {
        "pods": n,
        "nodes": len(run.nodes),
        "rate_limits": _limits(args),
        "boot_seconds": args.boot_seconds,
        "create_pod_objects_s": round(ramp.created_s, 2),
        "all_running_s": round(ramp.to_running_s, 2),
        "probe_period_s": args.probes,
        "all_ready_s": None if ramp.to_ready_s is None else round(ramp.to_ready_s, 2),
        "ready_after_hold": hold.still_ready if args.probes else None,
        "pod_running_p50_s": percentile(per_pod, 50),
        "pod_running_p99_s": percentile(per_pod, 99),
        "bound_to_create_sent_p50_s": percentile(bound_to_create, 50),
        "bound_to_create_sent_p99_s": percentile(bound_to_create, 99),
        "pacer_create_wait": hold_vars.get("pacer", {}).get("create"),
        "create_gap_min_s": round(min(gaps), 2) if gaps else None,
        "instance_running_to_pod_running_p50_s": percentile(instance_to_running, 50),
        "instance_running_to_pod_running_p99_s": percentile(instance_to_running, 99),
        "cpu_ramp_s": {k: round(v, 1) for k, v in ramp.cpu.items()},
        "cpu_steady_cores": {k: round(v, 4) for k, v in hold.steady_cores.items()},
        "cpu_delete_s": {k: round(v, 1) for k, v in deleted.cpu.items()},
        "node_rss_idle_mb": round(idle_rss / 1024, 1),
        "node_rss_running_mb": round(ramp.running_rss / 1024, 1),
        "node_rss_held_mb": round(hold.held_rss / 1024, 1),
        "node_rss_peak_mb": round(deleted.peak_rss / 1024, 1),
        "node_rss_per_pod_kb": round((hold.held_rss - idle_rss) / n, 1),
        "vast_calls_per_min_steady": hold.steady_calls,
        "vast_429s": sum(v for k, v in deleted.vast_stats.items() if k.endswith(" 429")),
        "kube_calls_per_pod": None if kube_calls is None else round(kube_calls, 1),
        "kube_calls_per_pod_by_endpoint": kube_by_endpoint,  # the bench's own included
        "loop_stall": end_vars.get("loop_stall"),
        "loop_stall_hold": hold_vars.get("loop_stall"),
        "gc_pauses": end_vars.get("gc"),
        "lease_renewal_gap_max_s": longest_renewal_gap(run.renewals, hold.ended_at),
        "poller": end_vars.get("poller"),
        "delete_all_s": round(deleted.seconds, 2),
        "destroy_failed_events": deleted.destroy_failed,
        "instances_bought": len(ledger),
        "leaked": sum(1 for e in ledger if e["destroyed_at"] is None),
        "instances_per_pod": round(len(ledger) / n, 3),
        "baseline": hold.baseline,
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _kube_calls(
    run: BenchRun, before: Counter[str] | None, after: Counter[str] | None
) -> tuple[float | None, dict[str, float]]:
    """Kubernetes calls per pod, the node's alone, and by endpoint (the bench's included)."""
    if before is None or after is None:
        return None, {}
    made = after - before
    per_pod = (sum(made.values()) - run.kube_calls_by_bench) / run.pods
    return per_pod, {k: round(v / run.pods, 2) for k, v in sorted(made.items())}
