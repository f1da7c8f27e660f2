"""What one soak does: sizes, timings, faults and the node's settings, from the command line.

Every knob has a default that makes a small soak converge within seconds on a laptop; the
fault defaults are moderate (a few percent each) so that every kind of failure happens a few
times in a run of a hundred pods without drowning the node.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

from vk_trio.devtools.sim.vast import Faults


class Plan(msgspec.Struct, kw_only=True, frozen=True):
    """One soak's parameters (all times in seconds)."""

    pods: int
    """Pods kept live, roughly: each deletion is followed by a creation."""
    duration: float
    """How long pods are churned, the node killed and faults injected."""
    kills: int
    """SIGKILLs of the node, at seeded random moments, one per equal slice of ``duration``."""
    seed: int = 0
    """Seeds the market, the simulator's fault draws, the workload and the kill times."""
    faults: Faults = Faults()
    """Injected by the Vast simulator during ``duration``; all zero while settling."""
    churn: float | None = None
    """Pod replacements per second; None replaces about the whole fleet once per soak."""
    force_delete: float = 0.1
    """Fraction of deletions made with grace 0 (``kubectl delete --force``): the pod object
    vanishes at once, so only the node (or its reaper) can still free the GPU."""
    max_downtime: float = 2.0
    """The node stays dead for up to this long after a kill (pods are deleted meanwhile)."""
    settle: float = 45.0
    """Upper bound of the settle period; it ends as soon as the node has converged."""
    boot_seconds: float = 2.0
    """The simulator's create → running time."""
    rate_scale: float = 0.01
    """Vast's documented rate limits times this, in the simulator and in the node's pacer."""
    startup_timeout: float = 8.0
    """The node's ``--startup-timeout``: a stuck boot is replaced after this long."""
    json_path: str | None = None
    """Where ``--json`` writes the report."""
    run_dir: str | None = None
    """Where logs and evidence go; None makes a fresh temporary directory."""
    node_args: tuple[str, ...] = ()
    """Extra flags for ``vk-trio run`` (``--node-arg=--max-instances=200``)."""
    replicas: int = 1
    """Processes of the node; above 1 they run with ``--leader-elect`` and each kill is the
    leader's, so the audit covers take-overs (adoption by a standby) instead of restarts."""
    outbids: float = 0.1
    """Outbids per second: a live interruptible instance, drawn at random, is outbid through
    ``/_sim/faults`` (``{"outbid": id}``), and half of them resumed a little later."""
    agent: bool = False
    """The agent mode (``--agent``): the Vast simulator runs each instance's process for real
    (``--run-containers``), the node gets ``--agent-url``, and half the pods run under the
    agent with a ConfigMap and a Secret as volumes and a Secret env var (``workload``)."""

    @property
    def replacements_per_second(self) -> float:
        return self.churn if self.churn is not None else self.pods / self.duration


DEFAULT_PODS = 30
DEFAULT_AGENT_PODS = 10
"""With ``--agent`` every instance is a real sandbox, and half of them run a Python agent
(~40-60 MB) beside a launcher (~13 MB): ten pods stay well within a laptop's memory."""

ELECTION_FLAGS = [
    "--leader-elect-lease-duration=4",
    "--leader-elect-renew-deadline=3",
    "--leader-elect-retry-period=0.5",
]
"""Client-go's 15/10/2 s scaled down, so that a soak sees several take-overs in a minute
(``tests/e2e/test_failover.py`` takes one over with the production timings)."""


def node_flags(plan: Plan) -> list[str]:
    """``vk-trio run`` flags that make the node converge in seconds instead of minutes."""
    return [
        "--poll-fast=0.2",
        "--poll-slow=1.0",
        "--backoff-first=0.5",
        "--backoff-cap=2.0",
        "--reap-interval=1.0",
        "--destroy-timeout=5.0",
        f"--startup-timeout={plan.startup_timeout}",
        f"--pacing={plan.rate_scale}",
        *(ELECTION_FLAGS if plan.replicas > 1 else []),
        *plan.node_args,
    ]


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    """The ``Plan`` of ``python -m tests.chaos ARGS`` (exits 2 on bad flags, as argparse)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Soak the node under churn, SIGKILLs and Vast faults, then audit the ledger.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--pods",
        type=int,
        default=None,
        help=f"pods kept live (default {DEFAULT_PODS}, {DEFAULT_AGENT_PODS} with --agent)",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="how long the churn lasts, seconds"
    )
    parser.add_argument("--kills", type=int, default=3, help="node SIGKILLs, at seeded moments")
    parser.add_argument("--seed", type=int, default=0, help="seeds the plan and the faults")
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    parser.add_argument("--run-dir", default=None, metavar="DIR", help="logs and evidence")
    parser.add_argument(
        "--churn", type=float, default=None, help="pod replacements per second (unset: pods/20)"
    )
    parser.add_argument(
        "--force-delete", type=float, default=0.1, help="fraction of deletions with grace 0"
    )
    parser.add_argument(
        "--max-downtime", type=float, default=2.0, help="seconds the node stays dead per kill"
    )
    parser.add_argument(
        "--settle", type=float, default=45.0, help="longest wait for the settled audit, seconds"
    )
    parser.add_argument(
        "--boot-seconds", type=float, default=2.0, help="simulated instance boot time"
    )
    parser.add_argument(
        "--rate-scale", type=float, default=0.01, help="multiplier of Vast's real rate limits"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=8.0, help="the node's STARTUP_TIMEOUT"
    )
    parser.add_argument(
        "--node-arg", action="append", default=[], metavar="FLAG", help="extra vk-trio run flag"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="node processes; above 1 they elect a leader and the leader is killed (%(default)s)",
    )
    parser.add_argument(
        "--outbids",
        type=float,
        default=0.1,
        help="interruptible instances outbid per second (half resumed later)",
    )
    parser.add_argument(
        "--agent",
        action="store_true",
        help="instances run their process for real and half the pods run under the vk-trio "
        "agent (volumes, Secret env); each sandboxed agent costs ~60-70 MB, hence fewer pods",
    )
    faults = parser.add_argument_group("faults (probabilities, latency in seconds)")
    for field, (flag, default) in _FAULT_FLAGS.items():
        faults.add_argument(
            flag, dest=field, type=float, default=default, metavar="RATE", help=_FAULT_HELP[field]
        )
    args = parser.parse_args(argv)
    if args.pods is None:
        args.pods = DEFAULT_AGENT_PODS if args.agent else DEFAULT_PODS
    if args.pods < 1 or args.duration <= 0 or args.kills < 0 or args.replicas < 1:
        parser.error("--pods, --duration and --replicas must be positive, --kills not negative")
    if args.outbids < 0:
        parser.error("--outbids must not be negative")
    return Plan(
        pods=args.pods,
        duration=args.duration,
        kills=args.kills,
        seed=args.seed,
        faults=Faults(**{field: getattr(args, field) for field in _FAULT_FLAGS}),
        churn=args.churn,
        force_delete=args.force_delete,
        max_downtime=args.max_downtime,
        settle=args.settle,
        boot_seconds=args.boot_seconds,
        rate_scale=args.rate_scale,
        startup_timeout=args.startup_timeout,
        json_path=args.json_path,
        run_dir=args.run_dir,
        node_args=tuple(args.node_arg),
        replicas=args.replicas,
        outbids=args.outbids,
        agent=args.agent,
    )


_FAULT_FLAGS: dict[str, tuple[str, float]] = {
    "rate_429": ("--rate-429", 0.05),
    "rate_5xx": ("--rate-5xx", 0.05),
    "latency": ("--latency", 0.02),
    "lose_create_response": ("--lose-create", 0.05),
    "offer_taken": ("--offer-taken", 0.05),
    "stuck_loading": ("--stuck-boot", 0.05),
    "oci_failure": ("--oci-failure", 0.03),
    "host_offline": ("--host-offline", 0.03),
    "instance_exit": ("--instance-exit", 0.05),
}
"""``Faults`` field (the flag's dest) → (flag, moderate default)."""

_FAULT_HELP: dict[str, str] = {
    "rate_429": "fraction of Vast calls answered 429",
    "rate_5xx": "fraction of Vast calls answered 5xx",
    "latency": "seconds added to every Vast answer",
    "lose_create_response": "fraction of creates whose answer is lost",
    "offer_taken": "fraction of creates whose offer is gone",
    "stuck_loading": "fraction of instances that never finish booting",
    "oci_failure": "fraction of instances that fail to start",
    "host_offline": "fraction of instances whose host goes offline",
    "instance_exit": "fraction of instances whose container exits",
}
