"""``vk-trio bench``'s flags and its main: one run per pod count, then the table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import trio

from vk_trio.devtools.bench.agent import bench_agents, default_agent_binary
from vk_trio.devtools.bench.processes import ChildFailed, others_than_node
from vk_trio.devtools.bench.run import bench_pod_count
from vk_trio.devtools.bench.streams import bench_streams, render_streams_table
from vk_trio.devtools.bench.table import render_agent_table, render_table
from vk_trio.devtools.bench.workload import Obj
from vk_trio.logs import configure_logging

DESCRIPTION = """\
Measure the node as users run it: start the Vast simulator, the Kubernetes stand-in and
`vk-trio run` (production defaults; only the endpoints differ), create N pods at once, wait
until all are Running, hold, delete them all, and print one table: time to Running per pod,
where the wait went, CPU and memory of each process, Vast calls in steady state, Kubernetes
calls per pod, event-loop stalls, the longest gap between two renewals of each node's
Lease, delete time, leaks. 100 and 1,000 pods by default.

With --agent: every instance runs its process for real in a sandbox, the pods run under the
vk-trio agent, and the table is what the agent costs: instance running → container running
per pod, the agent's RSS, the node's RSS and CPU per linked agent (20 pods by default).

With --exec N: one pod under the agent, and the streaming path through the real kubectl:
`kubectl exec -- true`'s round trip, port-forward's MB/s, and the node's event-loop stall
(wall and its own CPU) while N exec sessions stream 4 MB of output each at once."""
AGENT_PODS = 20
"""--agent's default: 20 sandboxes with Python agents take ~1.4 GB of RSS (~68 MB each: the
agent and the simulator's sandbox pid 1); 1,000 would take ~68 GB, more than this machine."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--pods",
        type=int,
        nargs="+",
        metavar="N",
        help="pod counts, one run each, e.g. --pods 100 1000 5000 "
        f"(default: 100 1000; with --agent, {AGENT_PODS})",
    )
    parser.add_argument(
        "--agent",
        action="store_true",
        help="pods run under the vk-trio agent in real sandboxes (sim vast --run-containers, "
        "vk-trio run --agent-url): measure what the agent costs",
    )
    parser.add_argument(
        "--exec",
        type=int,
        dest="exec_sessions",
        metavar="N",
        help="implies --agent: one pod under the agent, then kubectl exec's round trip, "
        "port-forward's throughput, and the node's event-loop stall while N exec sessions "
        "stream 4 MB of output each at once (e.g. --exec 50)",
    )
    parser.add_argument(
        "--pin-node",
        action="store_true",
        help="the node on CPU 0, everything else (simulators, agents, kubectl, the bench) on "
        "the others: the node with a core of its own, as in a cluster, where kubectl and the "
        "API server run elsewhere (needs 2+ CPUs)",
    )
    parser.add_argument(
        "--agent-binary",
        type=Path,
        metavar="PATH",
        help="with --agent, the simulator serves this agent (a built vk-trio) instead of "
        "this checkout's Python (default: dist/vk-trio when it exists)",
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
        "--hold",
        type=float,
        help="seconds to hold every pod Running (steady; default 45); with --agent, each "
        "idle window, without pods and with every agent linked (default 60)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up a phase after (seconds)"
    )
    parser.add_argument(
        "--run-dir", type=Path, metavar="DIR", help="where logs go (default: a temp folder)"
    )


def _defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on --agent."""
    if args.exec_sessions is not None:
        args.agent = True
    if args.pods is None:
        args.pods = [AGENT_PODS] if args.agent else [100, 1000]
    if args.hold is None:
        args.hold = 60.0 if args.agent else 45.0
    if args.agent and args.agent_binary is None:
        args.agent_binary = default_agent_binary()


def main(args: argparse.Namespace) -> int:
    configure_logging("WARNING", json=False)
    _defaults(args)
    if any(n < 1 for n in args.pods) or args.nodes < 1:
        print("--pods and --nodes must be positive", file=sys.stderr)
        return 2
    if args.agent and (args.probes or args.baseline):
        print("--agent measures idle agents: no --probes, no --baseline", file=sys.stderr)
        return 2
    if args.pin_node:
        if len(os.sched_getaffinity(0)) < 2:
            print("--pin-node needs 2 or more CPUs", file=sys.stderr)
            return 2
        os.sched_setaffinity(0, others_than_node())  # what the bench starts inherits it
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="vk-trio-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.exec_sessions is not None:
        return _main_streams(args, run_dir)
    results: list[Obj] = []
    for pods in args.pods:
        folder = run_dir / f"pods-{pods}"
        folder.mkdir(exist_ok=True)
        print(f"bench: {pods} pods (logs in {folder})", file=sys.stderr, flush=True)
        try:
            results.append(
                trio.run(bench_agents if args.agent else bench_pod_count, pods, args, folder)
            )
        except (trio.TooSlowError, ChildFailed) as exc:
            print(f"bench: {pods} pods FAILED: {exc or 'timed out'}", file=sys.stderr)
            return 1
    print(render_agent_table(results, args) if args.agent else render_table(results, args))
    if args.json_path:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _main_streams(args: argparse.Namespace, run_dir: Path) -> int:
    """``--exec N``: one streaming run, its table (and JSON)."""
    if args.exec_sessions < 1:
        print("--exec must be positive", file=sys.stderr)
        return 2
    folder = run_dir / f"exec-{args.exec_sessions}"
    folder.mkdir(exist_ok=True)
    print(f"bench: {args.exec_sessions} exec sessions (logs in {folder})", file=sys.stderr)
    try:
        result = trio.run(bench_streams, args.exec_sessions, args, folder)
    except (trio.TooSlowError, ChildFailed) as exc:
        print(f"bench: exec FAILED: {exc or 'timed out'}", file=sys.stderr)
        return 1
    print(render_streams_table([result], args))
    if args.json_path:
        args.json_path.write_text(json.dumps([result], indent=2) + "\n")
    return 0
