"""``vk-trio bench --agent``: what running pods under the vk-trio agent costs.

The simulator runs every instance's process for real (``sim vast --run-containers``): the
bootstrap downloads the agent from the simulator, checks its SHA-256 and execs it; the node
(``vk-trio run --agent-url``, production defaults otherwise) links to it over mutual TLS and
hands it the pod. The bench creates N such pods (``vast.ai/agent: "true"``, an idle shell
command) and measures, on the real processes:

- per pod, from the instance's process starting (the simulator's ledger: the instance shows
  ``running`` from that instant) to the bench seeing the container ``running`` in the pod's
  status, which only the agent's PodState, relayed over the link, can put there: download,
  checksum, agent start, link, Start, the status patch and the watch, all in one figure;
- each agent's RSS inside its sandbox (``/proc/<pid>/status``, the agent found among the
  simulator's descendants), and its CPU while idle;
- the node's RSS and CPU with N agents linked minus with none, in the same run, each read
  after an idle window of ``--hold`` seconds, divided by N.

In the simulator the agent is this checkout's Python (``python -m vk_trio agent``, which is
what ``sim vast`` serves unless it runs as the static binary), not the static binary
instances get in production; ``--agent-binary`` (default ``dist/vk-trio`` when it exists)
serves a built binary instead. Per-agent node costs are extrapolated linearly to 1,000
agents, labelled as such: 1,000 real sandboxes with Python agents would take ~68 GB of RSS
(~60 MB agent + ~7 MB sandbox pid 1 each) here.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import trio

from vk_trio.devtools.bench.load import create_pods
from vk_trio.devtools.bench.observe import deltas, follow_pods, percentile
from vk_trio.devtools.bench.processes import (
    command_line,
    cpu_seconds,
    descendants,
    memory_kb,
    proportional_kb,
)
from vk_trio.devtools.bench.run import (
    Clients,
    delete_all,
    start_processes,
    stop_children,
    until,
    wait_nodes_ready,
)
from vk_trio.devtools.bench.state import BenchRun
from vk_trio.devtools.bench.workload import Obj
from vk_trio.provider.labels import label_owner

EXTRAPOLATE_TO = 1000
"""Agents per node the per-agent node cost is extrapolated to."""
LAUNCHER = "launcher.py"
"""The sandbox's pid 1 in the simulator (no such process on Vast: there, the agent is)."""


async def bench_agents(pods: int, args: argparse.Namespace, folder: Path) -> Obj:
    """One agent run of ``pods`` pods; every child process is stopped whatever happens."""
    run = BenchRun(pods, args, folder)
    try:
        return await _measure(run)
    finally:
        await stop_children(run)


@dataclass
class _Idle:
    """The node over one idle window: its RSS at the end (KiB), its CPU in cores."""

    rss_kb: int
    cores: float


async def _idle(run: BenchRun) -> _Idle:
    """Wait ``--hold`` seconds with nothing to do but keep what runs running."""
    cpu_0, t_0 = run.cpu().get("node", 0.0), time.time()
    await trio.sleep(run.args.hold)
    cpu_1, t_1 = run.cpu().get("node", 0.0), time.time()
    return _Idle(run.rss_kb()[0], (cpu_1 - cpu_0) / (t_1 - t_0))


async def _measure(run: BenchRun) -> Obj:
    """No pods idle; N agent pods to started; N agents linked idle; delete; the report."""
    urls = await start_processes(run)
    async with AsyncExitStack() as stack:
        clients = await Clients.open(stack, urls)
        async with trio.open_nursery() as nursery:
            await wait_nodes_ready(run, clients)
            idle_0 = await _idle(run)
            nursery.start_soon(follow_pods, run, clients.kube)
            cpu_before, started = run.cpu(), time.time()
            await create_pods(run, clients.kube)
            await until(run, lambda: len(run.started) >= run.pods, interval=0.1)
            ramp_s, ramp_cpu = time.time() - started, deltas(run.cpu(), cpu_before)
            agents_0 = agents(run)
            idle_n = await _idle(run)
            agents_1 = agents(run)
            process_started = _process_starts(await clients.ledger(), run)
            deleted = await delete_all(run, clients)
            nursery.cancel_scope.cancel()
    report: Obj = {
        "pods": run.pods,
        "agent": _agent_kind(run.args),
        "boot_seconds": run.args.boot_seconds,
        "idle_s": run.args.hold,
        "all_started_s": round(ramp_s, 2),
        "node_cpu_ramp_s_per_pod": round(ramp_cpu.get("node", 0.0) / run.pods, 3),
        **_to_started(run, process_started),
        **_agent_costs(agents_0, agents_1, run.args.hold),
        **_node_costs(idle_0, idle_n, run.pods),
        "leaked": sum(1 for e in deleted.ledger if e["destroyed_at"] is None),
        "instances_per_pod": round(len(deleted.ledger) / run.pods, 3),
    }
    return report


def _agent_kind(args: argparse.Namespace) -> str:
    if args.agent_binary:
        return f"static binary {args.agent_binary}"
    return f"Python: {sys.executable} -m vk_trio agent (this checkout, not the static binary)"


# -- per pod: instance running → container running ------------------------------------------


def _process_starts(ledger: list[Obj], run: BenchRun) -> dict[str, float]:
    """Pod name → wall time its instance's process started (its latest boot's)."""
    starts: dict[str, float] = {}
    for entry in ledger:
        owners = (label_owner(entry["label"], node) for node in run.nodes)
        owner = next((o for o in owners if o is not None), None)
        name = run.uids.get(owner.uid) if owner else None
        if name is not None and entry.get("process_started") is not None:
            starts[name] = entry["process_started"]
    return starts


def _node_log_times(run: BenchRun, message: str) -> dict[str, float]:
    """Pod name → wall time of the first node log line ``message`` about it (JSON lines)."""
    found: dict[str, float] = {}
    for log in run.folder.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if f'"msg":"{message}"' not in line:
                continue
            record = json.loads(line)
            name = str(record.get("pod", "")).rpartition("/")[2]
            moment = _dt.datetime.fromisoformat(record["time"]).timestamp()
            found.setdefault(name, moment)
    return found


def _split(run: BenchRun, process_started: dict[str, float]) -> Obj:
    """Where the wait went, from the node's log: instance running → the node sees it
    (``Instance ready``), → the link is up (``agent linked``; the node retries after 1, 2,
    4… s while the agent is not listening yet), → the bench sees the container running."""
    seen, linked = _node_log_times(run, "Instance ready"), _node_log_times(run, "agent linked")
    names = [n for n in process_started if n in seen and n in linked and n in run.started]
    return {
        "split_running_to_seen_p50_s": percentile(
            [seen[n] - process_started[n] for n in names], 50
        ),
        "split_seen_to_linked_p50_s": percentile([linked[n] - seen[n] for n in names], 50),
        "split_linked_to_started_p50_s": percentile(
            [run.started[n] - linked[n] for n in names], 50
        ),
    }


def _to_started(run: BenchRun, process_started: dict[str, float]) -> Obj:
    """Instance running → container running, per pod; and pod created → container running."""
    waits = [run.started[n] - t for n, t in process_started.items() if n in run.started]
    from_post = [run.started[n] - run.posted[n] for n in run.started if n in run.posted]
    return {
        **_split(run, process_started),
        "instance_running_to_started_p50_s": percentile(waits, 50),
        "instance_running_to_started_p95_s": percentile(waits, 95),
        "instance_running_to_started_max_s": round(max(waits), 2) if waits else None,
        "instance_running_to_started_count": len(waits),
        "created_to_started_p50_s": percentile(from_post, 50),
        "created_to_started_p95_s": percentile(from_post, 95),
    }


# -- inside the instances: the agents' own RSS and CPU --------------------------------------


@dataclass
class _Agents:
    """What the agent processes use at one instant, by pod process tree."""

    rss_kb: list[int]
    """Each agent's VmRSS (KiB; a binary's bootloader and its child added up)."""
    pss_kb: list[int]
    """Each agent's PSS (KiB): the interpreter's and libraries' pages shared by N agents
    count 1/N each, which is what N agents on one machine take, not one per instance."""
    cpu_s: float
    """CPU seconds of all agents so far, with what their process reaped: the bootstrap ran
    in it before it exec'd the agent (its download and checksum are reaped children)."""
    launcher_rss_kb: list[int]
    """The simulator's sandbox pid 1s (``launcher.py``): no such process on Vast."""


def _is_agent(argv: list[str]) -> bool:
    """``python -m vk_trio agent`` or ``…/vk-trio agent`` (the bootstrap's exec)."""
    return len(argv) >= 2 and argv[-1] == "agent" and any("vk" in a for a in argv[:-1])


def agents(run: BenchRun) -> _Agents:
    """The agents among the simulator's descendants (unshare → launcher → agent → pod)."""
    tree = descendants(run.children["vast sim"].pid)
    argv = {pid: command_line(pid) for pid in tree}
    agents = {pid for pid, args in argv.items() if _is_agent(args)}
    rss: dict[int, int] = {}
    pss: dict[int, int] = {}
    for pid in agents:  # a child agent (a binary's bootloader's) counts for its parent's
        top = tree[pid] if tree[pid] in agents else pid
        rss[top] = rss.get(top, 0) + _kb_or_zero(pid, proportional=False)
        pss[top] = pss.get(top, 0) + _kb_or_zero(pid, proportional=True)
    launchers = [
        _kb_or_zero(pid, proportional=False)
        for pid, args in argv.items()
        if LAUNCHER in " ".join(args)
    ]
    cpu = sum(_cpu_or_zero(pid) for pid in agents)
    return _Agents(list(rss.values()), list(pss.values()), cpu, launchers)


def _kb_or_zero(pid: int, *, proportional: bool) -> int:
    """VmRSS, or PSS, in KiB; 0 for a process gone meanwhile."""
    try:
        return proportional_kb(pid) if proportional else memory_kb(pid)[0]
    except OSError:
        return 0


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid, waited_children=True)
    except OSError:
        return 0.0


def _agent_costs(before: _Agents, after: _Agents, seconds: float) -> Obj:
    """The agents' RSS at the end of the idle window, their CPU until the container ran
    (bootstrap, agent start, link, Start; ``before``, per agent) and their CPU over it."""
    count = len(after.rss_kb)
    return {
        "agents_found": count,
        "agent_rss_p50_mb": _mb(statistics.median(after.rss_kb)) if count else None,
        "agent_rss_max_mb": _mb(max(after.rss_kb)) if count else None,
        "agent_pss_p50_mb": _mb(statistics.median(after.pss_kb)) if count else None,
        "agent_cpu_start_s": round(before.cpu_s / len(before.rss_kb), 2) if before.rss_kb else None,
        "agent_cores_idle": (
            round((after.cpu_s - before.cpu_s) / seconds / count, 5) if count else None
        ),
        "launcher_rss_p50_mb": (
            _mb(statistics.median(after.launcher_rss_kb)) if after.launcher_rss_kb else None
        ),
    }


def _mb(kib: float) -> float:
    return round(kib / 1024, 1)


# -- the node: N linked agents minus none ---------------------------------------------------


def _node_costs(none: _Idle, linked: _Idle, n: int) -> Obj:
    """The node's RSS and idle CPU with N agents linked minus with none, per agent, and
    linearly extrapolated to ``EXTRAPOLATE_TO`` agents."""
    rss_per_agent = (linked.rss_kb - none.rss_kb) / n
    cores_per_agent = (linked.cores - none.cores) / n
    return {
        "node_rss_0_mb": _mb(none.rss_kb),
        "node_rss_n_mb": _mb(linked.rss_kb),
        "node_rss_per_agent_kb": round(rss_per_agent, 1),
        "node_cores_0": round(none.cores, 5),
        "node_cores_n": round(linked.cores, 5),
        "node_cpu_s_per_agent_per_hour": round(cores_per_agent * 3600, 2),
        "extrapolated_agents": EXTRAPOLATE_TO,
        "extrapolated_node_rss_mb": _mb(none.rss_kb + rss_per_agent * EXTRAPOLATE_TO),
        "extrapolated_node_cores": round(none.cores + cores_per_agent * EXTRAPOLATE_TO, 3),
    }


def default_agent_binary() -> Path | None:
    """``dist/vk-trio`` of this checkout when it was built (``build/build.sh``), else None."""
    checkout = Path(__file__).resolve().parents[3]
    binary = checkout / "dist" / "vk-trio"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None
