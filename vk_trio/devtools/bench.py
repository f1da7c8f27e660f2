"""``vk-trio bench``: N pods created at once on the real node process, measured end to end.

For each pod count it starts, each as its own process, the Vast simulator (``vk-trio sim
vast``, rate limits off, or Vast's real ones with ``--real-limits``), the Kubernetes stand-in
(``vk-trio sim kube``, or a cluster given with ``--kubeconfig``) and ``vk-trio run`` with its
production defaults: only the endpoints differ, and the pacing multiplier follows the
simulator (``--pacing 0`` against one without limits, the default against real ones). Then it
creates N pods at once, waits until every one is Running, holds them, deletes them all at
once, and prints one table (and ``--json``): where the time went, CPU and memory of each
process, Vast calls per minute in steady state, Kubernetes calls per pod, the node's
event-loop stalls, and what the simulator's ledger says about money (leaks, instances per pod).

``--probes`` gives every pod an httpGet readiness and liveness probe, answered for real by
the simulator's listeners on 127.0.0.1 (``sim vast --serve-ports``; 503 for the first
``APP_READY_AFTER`` seconds of each instance, then 200), and adds the time until every pod
is Ready; the hold is then steady probing, and the loop stall measured over it is what
probing costs the node.

``--baseline`` also polls every pod's instance the way the seed did (one ``GET
/api/v0/instances/{id}/`` per pod per ``--baseline-interval``) for a hold's length, so the
ratio of Vast calls and simulator CPU is measured in the same run.

Times are wall-clock on this machine; CPU is read from ``/proc/<pid>/stat``, memory from
``/proc/<pid>/status``. Network traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from pathlib import Path
from typing import Any

import httpx
import trio

from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.watch import watch_pods
from vk_trio.logs import configure_logging
from vk_trio.provider.labels import label_owner

NODE = "vk-bench"
API_KEY = "vk-bench-key"
NAMESPACE = "default"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
STARTUP_SECONDS = 120.0
APP_READY_AFTER = 5.0
"""With ``--probes``: seconds each simulated app answers 503 after its instance runs."""
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Obj = dict[str, Any]


DESCRIPTION = """\
Measure the node as users run it: start the Vast simulator, the Kubernetes stand-in and
`vk-trio run` (production defaults; only the endpoints differ), create N pods at once, wait
until all are Running, hold, delete them all, and print one table: time to Running per pod,
where the wait went, CPU and memory of each process, Vast calls in steady state, Kubernetes
calls per pod, event-loop stalls, the longest gap between two renewals of each node's
Lease, delete time, leaks. 100 and 1,000 pods by default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--pods",
        type=int,
        nargs="+",
        default=[100, 1000],
        metavar="N",
        help="pod counts, one run each, e.g. --pods 100 1000 5000 (default: 100 1000)",
    )
    parser.add_argument(
        "--real-limits",
        action="store_true",
        help="the simulator enforces Vast's rate limits and the node paces as in production",
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="use this cluster instead of the stand-in"
    )
    parser.add_argument(
        "--json", type=Path, dest="json_path", metavar="PATH", help="also write results here"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also measure the seed's per-pod polling"
    )
    parser.add_argument(
        "--baseline-interval",
        type=float,
        default=10.0,
        help="seconds between two polls of one pod in --baseline (Vast's docs suggest 10)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="K",
        help="virtual nodes, each its own `vk-trio run`; the N pods are spread evenly",
    )
    parser.add_argument(
        "--probes",
        type=int,
        nargs="?",
        const=1,
        metavar="PERIOD",
        help="every pod gets an httpGet readiness and liveness probe every PERIOD seconds "
        "(default 1), answered by the simulator's listeners on 127.0.0.1",
    )
    parser.add_argument("--boot-seconds", type=float, default=5.0, help="simulated boot time")
    parser.add_argument(
        "--hold", type=float, default=45.0, help="seconds to hold every pod Running (steady)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up a phase after (seconds)"
    )
    parser.add_argument(
        "--run-dir", type=Path, metavar="DIR", help="where logs go (default: a temp folder)"
    )


def main(args: argparse.Namespace) -> int:
    configure_logging("WARNING", json=False)
    if any(n < 1 for n in args.pods) or args.nodes < 1:
        print("--pods and --nodes must be positive", file=sys.stderr)
        return 2
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="vk-trio-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[Obj] = []
    for pods in args.pods:
        folder = run_dir / f"pods-{pods}"
        folder.mkdir(exist_ok=True)
        print(f"bench: {pods} pods (logs in {folder})", file=sys.stderr, flush=True)
        try:
            results.append(trio.run(_bench, pods, args, folder))
        except (trio.TooSlowError, ChildFailed) as exc:
            print(f"bench: {pods} pods FAILED: {exc or 'timed out'}", file=sys.stderr)
            return 1
    print(render_table(results, args))
    if args.json_path:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


# -- processes ------------------------------------------------------------------------------


class ChildFailed(Exception):
    """A child process exited on its own or never became ready; the message names its log."""


Popen = subprocess.Popen[bytes]


async def _start_sim(folder: Path, kind: str, *args: str) -> tuple[Popen, str]:
    """``vk-trio sim KIND ARGS`` in its own process, and the URL it prints first."""
    out, log = folder / f"sim-{kind}.out", folder / f"sim-{kind}.log"
    command = [sys.executable, "-m", "vk_trio", "sim", kind, "--listen", "127.0.0.1:0", *args]
    process = _spawn(command, out=out, log=log)
    with trio.move_on_after(STARTUP_SECONDS):
        while process.poll() is None:
            first = (await trio.Path(out).read_text()).partition("\n")
            if first[1]:
                return process, first[0].strip()
            await trio.sleep(0.05)
    process.kill()
    raise ChildFailed(f"the {kind} simulator did not start; see {log}")


def _spawn(
    command: list[str], *, out: Path | None, log: Path, env: dict[str, str] | None = None
) -> Popen:
    """Start a child writing to files (a pipe nobody reads could fill up and stall it)."""
    with log.open("wb") as log_file:
        if out is None:
            return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        with out.open("wb") as out_file:
            return subprocess.Popen(command, stdout=out_file, stderr=log_file, env=env)


def _stop(process: Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def market_file(folder: Path, pods: int) -> Path:
    """The simulator's seeded market plus an RTX 3090 for every pod (and a few spare)."""
    offer = {
        "gpu_name": "RTX 3090",
        "num_gpus": 1,
        "dph_total": 0.4,
        "geolocation": "Texas, US",
        "reliability": 0.999,
        "reliability2": 0.999,
        "verification": "verified",
        "rentable": True,
        "rented": False,
        "disk_space": 500.0,
    }
    market = VastSim()
    market.add_offers([offer] * (pods + 10))
    path = folder / "offers.json"
    path.write_text(json.dumps(market.offers()))
    return path


def node_names(count: int) -> list[str]:
    """``vk-bench``, or ``vk-bench-0`` … for several nodes."""
    return [NODE] if count == 1 else [f"{NODE}-{i}" for i in range(count)]


def bench_pod(name: str, node: str = NODE, *, probe_period: int | None = None) -> Obj:
    """A one-GPU pod bound to ``node``, as a scheduler would have bound it; with
    ``probe_period``, probed on its port 8000 (liveness only after the app's start)."""
    container: Obj = {
        "name": "app",
        "image": "nginx:1.27",
        "ports": [{"containerPort": 8000}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    if probe_period is not None:
        probe = {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": probe_period}
        container["readinessProbe"] = probe
        container["livenessProbe"] = {**probe, "initialDelaySeconds": 30, "failureThreshold": 3}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"vast.ai/gpu-type": "RTX 3090", "vast.ai/price-max": "2.00"},
        },
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [container],
        },
    }


# -- one run --------------------------------------------------------------------------------


class _Run:
    """The processes and clients of one pod count's run, and what was seen."""

    def __init__(self, pods: int, args: argparse.Namespace, folder: Path) -> None:
        self.pods = pods
        self.args = args
        self.nodes = node_names(args.nodes)
        self.folder = folder
        self.children: dict[str, Popen] = {}
        self.posted: dict[str, float] = {}
        """Pod name → wall time its create was answered (it is bound from birth)."""
        self.uids: dict[str, str] = {}
        self.running: dict[str, float] = {}
        """Pod name → wall time the bench first saw it Running."""
        self.ready: dict[str, float] = {}
        """Pod name → wall time the bench first saw it Ready."""
        self.renewals: dict[str, list[float]] = {node: [] for node in self.nodes}
        """Node → wall times at which the bench saw its Lease renewed, while holding."""
        self.present: set[str] = set()
        self.kube_calls_by_bench = 0

    def cpu(self) -> dict[str, float]:
        """CPU-seconds by process, every node's added up under "node"."""
        used: dict[str, float] = {}
        for name, process in self.children.items():
            key = "node" if name.startswith("node") else name
            used[key] = used.get(key, 0.0) + cpu_seconds(process.pid)
        return used

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the node processes, added up."""
        sizes = [memory_kb(p.pid) for n, p in self.children.items() if n.startswith("node")]
        return sum(rss for rss, _ in sizes), sum(peak for _, peak in sizes)

    def check(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                raise ChildFailed(f"{name} exited with status {process.returncode}")


async def _bench(pods: int, args: argparse.Namespace, folder: Path) -> Obj:
    run = _Run(pods, args, folder)
    try:
        return await _measure(run)
    finally:
        # Waiting for a child to exit blocks: off the Trio thread, and finished even when
        # the bench is interrupted, so no simulator or node outlives it.
        with trio.CancelScope(shield=True):
            for process in reversed(run.children.values()):
                await trio.to_thread.run_sync(_stop, process)


async def _measure(run: _Run) -> Obj:
    args, folder, n = run.args, run.folder, run.pods
    limits = "real" if args.real_limits else "off"
    vast_process, vast_url = await _start_sim(
        folder,
        "vast",
        *("--rate-limits", limits, "--boot-seconds", str(args.boot_seconds)),
        *("--api-key", API_KEY, "--offers", str(market_file(folder, n))),
        *(("--serve-ports", "--app-ready-after", str(APP_READY_AFTER)) if args.probes else ()),
    )
    run.children["vast sim"] = vast_process
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        kubeconfig = str(folder / "kubeconfig")
        kube_process, kube_url = await _start_sim(folder, "kube", "--kubeconfig-out", kubeconfig)
        run.children["kube sim"] = kube_process
    flags = [] if args.real_limits else ["--pacing=0"]
    healths = []
    for i, node in enumerate(run.nodes):
        health = f"http://127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "NODE_NAME": node,
            "VAST_API_KEY": API_KEY,
            "VAST_API_URL": vast_url,
            "KUBECONFIG": kubeconfig,
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": health.rpartition(":")[2],
            # the kubelet API too, on loopback: never 0.0.0.0:10250 on someone's machine
            "KUBELET_HOST": "127.0.0.1",
            "KUBELET_PORT": str(_free_port()),
            "POD_IP": "127.0.0.1",
        }
        name, log = ("node", "node.log") if len(run.nodes) == 1 else (f"node {i}", f"{node}.log")
        run.children[name] = _spawn(
            [sys.executable, "-m", "vk_trio", "run", *flags], out=None, log=folder / log, env=env
        )
        healths.append(health)
    async with AsyncExitStack() as stack:
        kube = await stack.enter_async_context(
            KubeClient.from_config(await load_config(kubeconfig=kubeconfig))
        )
        vast = await stack.enter_async_context(httpx.AsyncClient(base_url=vast_url, timeout=60))
        probes = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=health, timeout=10))
            for health in healths
        ]
        kube_stats: httpx.AsyncClient | None = None
        if "kube sim" in run.children:
            kube_stats = await stack.enter_async_context(
                httpx.AsyncClient(base_url=kube_url, timeout=60)
            )
        nursery = await stack.enter_async_context(trio.open_nursery())

        async def vast_stats() -> Counter[str]:
            return Counter((await vast.get("/_sim/stats")).json())

        async def kube_requests() -> Counter[str] | None:
            if kube_stats is None:
                return None
            return Counter((await kube_stats.get("/_sim/stats")).json())

        for probe in probes:
            await _wait_ready(run, probe)
        await trio.sleep(2.0)
        idle_rss, _ = run.rss_kb()
        nursery.start_soon(_follow_pods, run, kube)

        # -- ramp: N pods at once -----------------------------------------------------------
        kube_before = await kube_requests()
        cpu_before = run.cpu()
        started = time.time()
        await _create_all(run, kube)
        created = time.time() - started
        with trio.fail_after(args.timeout):
            while len(run.running) < n:
                run.check()
                await trio.sleep(0.2)
        to_running = time.time() - started
        to_ready = None
        if args.probes:
            with trio.fail_after(args.timeout):
                while len(run.ready) < n:
                    run.check()
                    await trio.sleep(0.2)
            to_ready = time.time() - started
        cpu_ramp = _diff(run.cpu(), cpu_before)
        running_rss, _ = run.rss_kb()

        # -- hold: steady state (probing, with --probes) ------------------------------------
        stats_0, cpu_0, t_0 = await vast_stats(), run.cpu(), time.time()
        async with trio.open_nursery() as holding:
            for node in run.nodes:
                holding.start_soon(_follow_lease, run, kube, node)
            await trio.sleep(args.hold)
            holding.cancel_scope.cancel()
        stats_1, cpu_1, t_1 = await vast_stats(), run.cpu(), time.time()
        still_ready = sum(1 for name in run.ready if name in run.present)
        steady_minutes = (t_1 - t_0) / 60
        steady_calls = {
            k: round(v / steady_minutes, 1) for k, v in (stats_1 - stats_0).items() if v
        }
        steady_cores = {k: v / (t_1 - t_0) for k, v in _diff(cpu_1, cpu_0).items()}
        held_rss, _ = run.rss_kb()
        ledger: list[Obj] = (await vast.get("/_sim/ledger")).json()
        baseline = None
        if args.baseline:
            baseline = await _baseline(run, vast, ledger, steady_calls, steady_cores)
        hold_vars = await _debug_vars(probes, stall_seconds=math.floor(t_1 - t_0))

        # -- delete all at once -------------------------------------------------------------
        deleting = time.time()
        cpu_before_delete = run.cpu()
        await _delete_all(run, kube)
        with trio.fail_after(args.timeout):
            while True:
                run.check()
                ledger = (await vast.get("/_sim/ledger")).json()
                if not run.present and all(e["destroyed_at"] is not None for e in ledger):
                    break
                await trio.sleep(0.5)
        delete_all = time.time() - deleting
        cpu_delete = _diff(run.cpu(), cpu_before_delete)
        kube_after = await kube_requests()
        final_stats = await vast_stats()
        destroy_failed = await _count_events(kube, "DestroyFailed")
        end_vars = await _debug_vars(probes)
        _, peak_rss = run.rss_kb()
        nursery.cancel_scope.cancel()

    per_pod = [run.running[p] - run.posted[p] for p in run.running]
    first_instance = _first_instances(ledger, run)
    bound_to_create = [start - run.posted[name] for name, start in first_instance.items()]
    instance_to_running = [
        run.running[name] - (start + args.boot_seconds)
        for name, start in first_instance.items()
        if name in run.running
    ]
    creates = sorted(e["start_date"] for e in ledger)
    gaps = [b - a for a, b in itertools.pairwise(creates)]
    kube_calls = None
    kube_by_endpoint: dict[str, float] = {}
    if kube_before is not None and kube_after is not None:
        made = kube_after - kube_before
        kube_calls = (sum(made.values()) - run.kube_calls_by_bench) / n
        kube_by_endpoint = {k: round(v / n, 2) for k, v in sorted(made.items())}
    return {
        "pods": n,
        "nodes": len(run.nodes),
        "rate_limits": limits,
        "boot_seconds": args.boot_seconds,
        "create_pod_objects_s": round(created, 2),
        "all_running_s": round(to_running, 2),
        "probe_period_s": args.probes,
        "all_ready_s": None if to_ready is None else round(to_ready, 2),
        "ready_after_hold": still_ready if args.probes else None,
        "pod_running_p50_s": _pct(per_pod, 50),
        "pod_running_p99_s": _pct(per_pod, 99),
        "bound_to_create_sent_p50_s": _pct(bound_to_create, 50),
        "bound_to_create_sent_p99_s": _pct(bound_to_create, 99),
        "pacer_create_wait": hold_vars.get("pacer", {}).get("create"),
        "create_gap_min_s": round(min(gaps), 2) if gaps else None,
        "instance_running_to_pod_running_p50_s": _pct(instance_to_running, 50),
        "instance_running_to_pod_running_p99_s": _pct(instance_to_running, 99),
        "cpu_ramp_s": {k: round(v, 1) for k, v in cpu_ramp.items()},
        "cpu_steady_cores": {k: round(v, 4) for k, v in steady_cores.items()},
        "cpu_delete_s": {k: round(v, 1) for k, v in cpu_delete.items()},
        "node_rss_idle_mb": round(idle_rss / 1024, 1),
        "node_rss_running_mb": round(running_rss / 1024, 1),
        "node_rss_held_mb": round(held_rss / 1024, 1),
        "node_rss_peak_mb": round(peak_rss / 1024, 1),
        "node_rss_per_pod_kb": round((held_rss - idle_rss) / n, 1),
        "vast_calls_per_min_steady": steady_calls,
        "vast_429s": sum(v for k, v in final_stats.items() if k.endswith(" 429")),
        "kube_calls_per_pod": None if kube_calls is None else round(kube_calls, 1),
        "kube_calls_per_pod_by_endpoint": kube_by_endpoint,  # the bench's own included
        "loop_stall": end_vars.get("loop_stall"),
        "loop_stall_hold": hold_vars.get("loop_stall"),
        "gc_pauses": end_vars.get("gc"),
        "lease_renewal_gap_max_s": _longest_gap(run.renewals, t_1),
        "poller": end_vars.get("poller"),
        "delete_all_s": round(delete_all, 2),
        "destroy_failed_events": destroy_failed,
        "instances_bought": len(ledger),
        "leaked": sum(1 for e in ledger if e["destroyed_at"] is None),
        "instances_per_pod": round(len(ledger) / n, 3),
        "baseline": baseline,
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


async def _wait_ready(run: _Run, probe: httpx.AsyncClient) -> None:
    with trio.fail_after(STARTUP_SECONDS):
        while True:
            run.check()
            try:
                if (await probe.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


async def _debug_vars(probes: list[httpx.AsyncClient], *, stall_seconds: int = 0) -> Obj:
    """The first node's ``/debug/vars``, with the worst loop stall and collector pauses of
    any node (stalls over the last ``stall_seconds``, or the whole run)."""
    query = {"stall_seconds": stall_seconds} if stall_seconds else {}
    answers: list[Obj] = [(await probe.get("/debug/vars", params=query)).json() for probe in probes]
    stalls = [a["loop_stall"] for a in answers if a.get("loop_stall")]
    worst = max(stalls, key=lambda s: s.get("max_s", 0), default=None)
    pauses = [a["gc"] for a in answers if a.get("gc")]
    worst_gc = max(pauses, key=lambda g: g["gen2"]["max_s"], default=None)
    return {**answers[0], "loop_stall": worst, "gc": worst_gc}


async def _follow_pods(run: _Run, kube: KubeClient) -> None:
    """Note when each pod is first seen Running, and which pods exist (the nodes' watch)."""
    async with trio.open_nursery() as nursery:
        for node in run.nodes:
            nursery.start_soon(_follow_node, run, kube, node)


async def _follow_node(run: _Run, kube: KubeClient, node: str) -> None:
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
            ready = any(
                c.type == "Ready" and c.status == "True" for c in event.pod.status.conditions
            )
            if ready and name not in run.ready:
                run.ready[name] = time.time()
            elif not ready:
                run.ready.pop(name, None)


async def _follow_lease(run: _Run, kube: KubeClient, node: str) -> None:
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


def _longest_gap(renewals: dict[str, list[float]], until: float) -> float | None:
    """The longest time any node went without a renewal seen, up to ``until``."""
    gaps = [
        b - a
        for times in renewals.values()
        if times
        for a, b in itertools.pairwise([*times, until])
    ]
    return round(max(gaps), 1) if gaps else None


async def _each(count: int, action: Callable[[int], Any], *, parallel: int = 32) -> None:
    limiter = trio.CapacityLimiter(parallel)

    async def one(i: int) -> None:
        async with limiter:
            await action(i)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)


async def _create_all(run: _Run, kube: KubeClient) -> None:
    async def create(i: int) -> None:
        name = f"bench-{i}"
        node = run.nodes[i % len(run.nodes)]
        created = await kube.request(
            "POST", PODS, json=bench_pod(name, node, probe_period=run.args.probes)
        )
        run.posted[name] = time.time()
        run.uids[created["metadata"]["uid"]] = name

    run.kube_calls_by_bench += run.pods
    await _each(run.pods, create)


async def _delete_all(run: _Run, kube: KubeClient) -> None:
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 30}

    async def delete(i: int) -> None:
        await kube.request("DELETE", f"{PODS}/bench-{i}", json=body)

    run.kube_calls_by_bench += run.pods
    await _each(run.pods, delete)


async def _count_events(kube: KubeClient, reason: str) -> int:
    listed = await kube.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")
    return sum(
        int(e.get("count") or 1) for e in listed.get("items", []) if e.get("reason") == reason
    )


def _first_instances(ledger: list[Obj], run: _Run) -> dict[str, float]:
    """Pod name → wall time the simulator created its first instance."""
    first: dict[str, float] = {}
    for entry in sorted(ledger, key=lambda e: e["start_date"]):
        owners = (label_owner(entry["label"], node) for node in run.nodes)
        owner = next((o for o in owners if o is not None), None)
        name = run.uids.get(owner.uid) if owner else None
        if name is not None and name not in first:
            first[name] = entry["start_date"]
    return first


async def _baseline(
    run: _Run,
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
    cpu = {k: v / elapsed for k, v in _diff(run.cpu(), cpu_0).items()}
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


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _pct(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(len(ordered) * q / 100) - 1)], 2)


# -- the table ------------------------------------------------------------------------------


def render_table(results: list[Obj], args: argparse.Namespace) -> str:
    """One column per pod count, one row per measure."""

    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{value}{unit}"

    def cpu(d: dict[str, float], unit: str) -> str:
        return " / ".join(f"{d.get(k, 0):g}" for k in ("node", "vast sim", "kube sim")) + unit

    def calls(d: dict[str, float]) -> str:
        short = {k.split(" ", 1)[1].split("/api/")[-1]: v for k, v in d.items()}
        return ", ".join(f"{k} {v:g}" for k, v in sorted(short.items())) or "0"

    def stall(key: str) -> Callable[[Obj], str]:
        def show(r: Obj) -> str:
            s = r[key] or {}
            return f"{s.get('p99_s', 0) * 1000:.0f} / {s.get('max_s', 0) * 1000:.0f} ms"

        return show

    def collections(r: Obj) -> str:
        pauses = r["gc_pauses"] or {}
        return " / ".join(
            f"{pauses[g]['count']}x {pauses[g]['max_s'] * 1000:.0f} ms"
            for g in ("gen0", "gen1", "gen2")
            if g in pauses
        )

    def pacer(r: Obj) -> str:
        wait = r["pacer_create_wait"]
        if not wait or not wait.get("waited_s"):
            return "0 (pacing off)" if not args.real_limits else "0"
        return f"{wait['p50_s']} / {wait['p99_s']} / {wait['max_s']} s"

    def baseline(r: Obj) -> str:
        b = r["baseline"]
        if not b:
            return "-"
        ours = b["ours_vast_calls_per_min"]
        ratio = f"x{b['seed_calls_per_min'] / ours:.0f}" if ours else "-"
        return (
            f"{b['seed_calls_per_min']:g} vs {ours:g} calls/min ({ratio}); sent "
            f"{b['vast_calls_per_min']:g}/min here (x{b['calls_ratio']}) with "
            f"{b['poller_cores']:g} cores"
        )

    rows: list[tuple[str, Callable[[Obj], str]]] = [
        ("pods", lambda r: str(r["pods"])),
        ("create pod objects", lambda r: cell(r["create_pod_objects_s"], " s")),
        ("all Running after", lambda r: cell(r["all_running_s"], " s")),
        ("all Ready after (probed)", lambda r: cell(r["all_ready_s"], " s")),
        (
            "per pod to Running p50 / p99",
            lambda r: f"{cell(r['pod_running_p50_s'])} / {cell(r['pod_running_p99_s'])} s",
        ),
        (
            "bound → create sent p50 / p99",
            lambda r: (
                f"{cell(r['bound_to_create_sent_p50_s'])} / "
                f"{cell(r['bound_to_create_sent_p99_s'])} s"
            ),
        ),
        ("  pacer wait (create) p50/p99/max", pacer),
        ("  min gap between creates", lambda r: cell(r["create_gap_min_s"], " s")),
        (
            "instance running → pod Running p50 / p99",
            lambda r: (
                f"{cell(r['instance_running_to_pod_running_p50_s'])} / "
                f"{cell(r['instance_running_to_pod_running_p99_s'])} s"
            ),
        ),
        ("CPU-s ramp node / vast / kube", lambda r: cpu(r["cpu_ramp_s"], "")),
        ("cores steady node / vast / kube", lambda r: cpu(r["cpu_steady_cores"], "")),
        ("CPU-s delete node / vast / kube", lambda r: cpu(r["cpu_delete_s"], "")),
        (
            "node RSS idle / held / peak",
            lambda r: (
                f"{r['node_rss_idle_mb']} / {r['node_rss_held_mb']} / {r['node_rss_peak_mb']} MB"
            ),
        ),
        ("node RSS per pod (held - idle)", lambda r: cell(r["node_rss_per_pod_kb"], " KB")),
        ("Vast calls/min steady", lambda r: calls(r["vast_calls_per_min_steady"])),
        ("Vast 429s", lambda r: str(r["vast_429s"])),
        ("Kubernetes calls per pod", lambda r: cell(r["kube_calls_per_pod"])),
        ("loop stall p99 / max, whole run", stall("loop_stall")),
        ("loop stall p99 / max, holding", stall("loop_stall_hold")),
        ("GC gen0 / gen1 / gen2 (count, worst)", collections),
        ("Lease renewal, longest gap", lambda r: cell(r["lease_renewal_gap_max_s"], " s")),
        ("Ready after the hold", lambda r: cell(r["ready_after_hold"])),
        ("delete all → all destroyed", lambda r: cell(r["delete_all_s"], " s")),
        ("DestroyFailed events", lambda r: str(r["destroy_failed_events"])),
        ("leaked", lambda r: str(r["leaked"])),
        ("instances per pod", lambda r: str(r["instances_per_pod"])),
        ("baseline (seed's per-pod polling)", baseline),
    ]
    table = [[name, *(fn(r) for r in results)] for name, fn in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        f"vk-trio bench: Vast rate limits {'real' if args.real_limits else 'off'}, "
        f"{args.boot_seconds:g} s boots, {args.hold:g} s hold, {os.cpu_count()} CPUs"
        + (f", readiness + liveness probes every {args.probes} s" if args.probes else "")
        + (f", {args.nodes} nodes (CPU and RSS added up)" if args.nodes > 1 else ""),
        "",
    ]
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
