"""``vk-trio bench --exec N``: the streaming path on the real processes.

The Vast simulator (``--run-containers``), the Kubernetes stand-in and ``vk-trio run``
(production defaults) each run as their own process, as in ``--agent``; one pod runs under
the vk-trio agent. The real ``kubectl`` then goes through the stand-in's SPDY upgrade proxy
to the node's kubelet API, and the node relays over its mutual-TLS link to the agent:

- ``kubectl exec pod -- true``: the round trip, median of 10 (kubectl's own start included,
  as a user sees it);
- ``kubectl port-forward``: MB/s of a 64 MiB download from the pod over loopback;
- the node's event-loop stall while N ``kubectl exec`` sessions each stream 4,000,000 bytes
  of output at once: per second, the longest loop turn (the health watchdog's, from the
  node's ``/debug/vars``), p50 / p99 / max over the window.

kubectl writes each session's output to a file the bench counts afterwards: the bench reads
nothing while the sessions run, so what it costs on this machine's CPUs is the kubectl
processes, the stand-in's splice, the node and the agent.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import trio

from vk_trio.devtools.bench.agent import agents
from vk_trio.devtools.bench.processes import free_port
from vk_trio.devtools.bench.run import (
    Clients,
    start_processes,
    stop_children,
    wait_nodes_ready,
)
from vk_trio.devtools.bench.state import BenchRun
from vk_trio.devtools.bench.workload import PODS, Obj, bench_pod

OUTPUT_BYTES = 4_000_000
"""What each exec session streams (``head -c … /dev/zero | tr '\\0' x``)."""
DOWNLOAD_BYTES = 64 * 2**20
"""What the port-forward download moves."""
ROUND_TRIPS = 10
POD = "bench-stream"
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


async def bench_streams(sessions: int, args: argparse.Namespace, folder: Path) -> Obj:
    """One streaming run; every child process is stopped whatever happens."""
    run = BenchRun(1, args, folder)
    try:
        return await _measure(run, sessions)
    finally:
        await stop_children(run)


class _Kubectl:
    """The real kubectl against the run's cluster, in a home of its own."""

    def __init__(self, folder: Path, kubeconfig: str) -> None:
        found = shutil.which("kubectl") or shutil.which(
            "kubectl", path=str(Path(sys.executable).parent)
        )
        if found is None:
            raise FileNotFoundError("kubectl is not on PATH")
        self.binary = found
        self.env = {**os.environ, "KUBECONFIG": kubeconfig, "HOME": str(folder)}

    async def __call__(
        self, *args: str, stdout: int | None = None, stderr: int | None = None, within: float = 60
    ) -> int:
        """kubectl's exit code (output to ``stdout`` and ``stderr``, file descriptors, or
        discarded)."""
        with trio.fail_after(within):
            result = await trio.run_process(
                [self.binary, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdout is None else stdout,
                stderr=subprocess.DEVNULL if stderr is None else stderr,
                check=False,
            )
        return result.returncode


async def _measure(run: BenchRun, sessions: int) -> Obj:
    """Start everything, approve the node's serving certificate, one pod, the three numbers."""
    urls = await start_processes(run)
    kubectl = _Kubectl(run.folder, urls.kubeconfig)
    async with AsyncExitStack() as stack:
        clients = await Clients.open(stack, urls)
        await wait_nodes_ready(run, clients)
        await _approve_serving_csrs(run, clients)
        port = free_port()
        await clients.kube.request("POST", PODS, json=_pod(run, port))
        await _until_exec_works(run, kubectl)
        trips = await _round_trips(kubectl)
        throughput = await _forward_throughput(kubectl, port)
        streamed = await _concurrent_execs(run, kubectl, sessions)
        stall, turn_cpu, gc = await _stall(clients.probes[0], streamed["seconds"])
        await clients.kube.request("DELETE", f"{PODS}/{POD}")
    return {
        "sessions": sessions,
        "exec_true_median_ms": round(statistics.median(trips) * 1000),
        "exec_true_max_ms": round(max(trips) * 1000),
        "port_forward_mb_s": round(throughput, 1),
        **{f"exec_{k}": v for k, v in streamed.items()},
        "loop_stall": stall,
        "loop_turn_cpu": turn_cpu,
        "gc": gc,
    }


def _pod(run: BenchRun, port: int) -> Obj:
    """The bench's pod under the agent: a file to download, served on ``port``."""
    pod = bench_pod(POD, run.nodes[0], agent=True)
    www = f"/tmp/vk-bench-www-{port}"
    pod["spec"]["containers"][0]["command"] = [
        "sh",
        "-c",
        f"mkdir -p {www} && head -c {DOWNLOAD_BYTES} /dev/zero > {www}/big && "
        f"exec python3 -m http.server {port} --bind 127.0.0.1 --directory {www}",
    ]
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": port}]
    return pod


async def _approve_serving_csrs(run: BenchRun, clients: Clients) -> None:
    """Play the cluster admin: approve the node's kubelet-serving CSR (``kubectl certificate
    approve``), without which the stand-in refuses the node's self-signed certificate."""
    pending: list[Obj] = []

    async def find() -> None:
        nonlocal pending
        listed = await clients.kube.request("GET", CSRS)
        pending = [c for c in listed.get("items", []) if not c.get("status")]

    with trio.fail_after(run.args.timeout):
        while not pending:
            run.check()
            await find()
            await trio.sleep(0.2)
    for csr in pending:
        name = csr["metadata"]["name"]
        csr["status"] = {
            "conditions": [{"type": "Approved", "status": "True", "reason": "BenchApprove"}]
        }
        await clients.kube.request("PUT", f"{CSRS}/{name}/approval", json=csr)


async def _until_exec_works(run: BenchRun, kubectl: _Kubectl) -> None:
    """The agent linked and the pod's process running: ``kubectl exec -- true`` answers 0."""
    ok = False

    async def try_once() -> None:
        nonlocal ok
        ok = await kubectl("exec", POD, "--", "true", within=30) == 0

    with trio.fail_after(run.args.timeout):
        while not ok:
            run.check()
            await try_once()
            await trio.sleep(0.5)


async def _round_trips(kubectl: _Kubectl) -> list[float]:
    trips = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        if await kubectl("exec", POD, "--", "true") != 0:
            raise RuntimeError("kubectl exec -- true failed")
        trips.append(time.perf_counter() - started)
    return trips


async def _forward_throughput(kubectl: _Kubectl, port: int) -> float:
    """MB/s (10^6 bytes) of one 64 MiB download through ``kubectl port-forward``."""
    local = free_port()
    process = await trio.lowlevel.open_process(
        [kubectl.binary, "port-forward", POD, f"{local}:{port}"],
        env=kubectl.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(60):
            while b"Forwarding from" not in seen:
                data = await process.stdout.receive_some(4096)
                if not data:
                    raise RuntimeError(f"kubectl port-forward ended: {seen!r}")
                seen += data
        return await _download(local)
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def _download(local: int) -> float:
    received, started = 0, time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("GET", f"http://127.0.0.1:{local}/big") as response,
    ):
        async for chunk in response.aiter_raw():
            received += len(chunk)
    seconds = time.perf_counter() - started
    if received != DOWNLOAD_BYTES:
        raise RuntimeError(f"port-forward download: {received} bytes of {DOWNLOAD_BYTES}")
    return received / 1e6 / seconds


async def _concurrent_execs(run: BenchRun, kubectl: _Kubectl, sessions: int) -> Obj:
    """N sessions at once, each's output to a file; all complete, or the bench fails."""
    script = f"head -c {OUTPUT_BYTES} /dev/zero | tr '\\0' x"
    failures: list[str] = []

    async def one(i: int) -> None:
        path, errors = run.folder / f"exec-{i}.out", run.folder / f"exec-{i}.err"
        with path.open("wb") as out, errors.open("wb") as err:
            code = await kubectl(
                "exec",
                *(POD, "--", "sh", "-c", script),
                stdout=out.fileno(),
                stderr=err.fileno(),
                within=600,
            )
        if code != 0 or path.stat().st_size != OUTPUT_BYTES:
            failures.append(f"{path.name}: exit {code}, {path.stat().st_size} bytes")

    cpu_before, started = _cpu(run), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(sessions):
            nursery.start_soon(one, i)
    seconds = time.perf_counter() - started
    cpu = {k: round((v - cpu_before.get(k, 0.0)) / seconds, 2) for k, v in _cpu(run).items()}
    return {
        "seconds": round(seconds, 2),
        "cores": cpu,
        "failed": len(failures),
        "failures": failures,
        "mb_s": round(sessions * OUTPUT_BYTES / 1e6 / seconds, 1),
    }


def _cpu(run: BenchRun) -> dict[str, float]:
    """CPU seconds so far of the children, the agent, and the kubectl processes (the bench's
    waited children): who uses this machine's cores while the sessions stream."""
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        **run.cpu(),
        "agent": agents(run).cpu_s,
        "kubectl": waited.ru_utime + waited.ru_stime,
    }


async def _stall(probe: httpx.AsyncClient, seconds: float) -> tuple[Obj, Obj, Obj]:
    """The node's per-second longest loop turn over the last ``seconds`` (whole seconds),
    in wall time and in the node's own CPU time; its collector's pauses (the whole run's:
    a full collection is the usual cause of a CPU-heavy turn)."""
    window = max(1, math.floor(seconds))
    answer: Obj = (await probe.get("/debug/vars", params={"stall_seconds": window})).json()
    return answer.get("loop_stall") or {}, answer.get("loop_turn_cpu") or {}, answer["gc"]


def render_streams_table(results: list[Obj], args: argparse.Namespace) -> str:
    """``--exec``'s table: one column per run."""
    rows: list[tuple[str, object]] = []
    for r in results:
        stall, cpu = r["loop_stall"], r["loop_turn_cpu"]
        rows += [
            ("concurrent exec sessions", r["sessions"]),
            (
                "kubectl exec -- true, median / max",
                f"{r['exec_true_median_ms']} / {r['exec_true_max_ms']} ms",
            ),
            ("port-forward, 64 MiB over loopback", f"{r['port_forward_mb_s']} MB/s"),
            (
                f"{r['sessions']} x 4 MB exec output: wall, aggregate, failed",
                f"{r['exec_seconds']} s, {r['exec_mb_s']} MB/s, {r['exec_failed']}",
            ),
            (
                "  CPU during it, cores: " + ", ".join(r["exec_cores"]),
                " / ".join(str(v) for v in r["exec_cores"].values()),
            ),
            (
                "node loop stall per second p50 / p99 / max",
                f"{_ms(stall, 'p50_s')} / {_ms(stall, 'p99_s')} / {_ms(stall, 'max_s')} ms "
                f"over {stall.get('samples')} s",
            ),
            (
                "  its most CPU-heavy turn per second p50 / p99 / max",
                f"{_ms(cpu, 'p50_s')} / {_ms(cpu, 'p99_s')} / {_ms(cpu, 'max_s')} ms",
            ),
            (
                "  gc pauses, whole run: gen2 count / max, gen0+1 max",
                f"{r['gc']['gen2']['count']} / {_ms(r['gc']['gen2'], 'max_s')} ms, "
                f"{_ms({'m': max(r['gc']['gen0']['max_s'], r['gc']['gen1']['max_s'])}, 'm')} ms",
            ),
        ]
    width = max(len(name) for name, _ in rows)
    title = (
        f"vk-trio bench --exec: node, stand-in and Vast simulator as separate processes, "
        f"pod under the agent, {os.cpu_count()} CPUs"
        + (", the node pinned to CPU 0 and everything else to the others" if args.pin_node else "")
    )
    return "\n".join([title, "", *(f"{n.ljust(width)}  {v}" for n, v in rows)])


def _ms(stall: Obj, key: str) -> str:
    value = stall.get(key)
    return "?" if value is None else f"{value * 1000:.0f}"
