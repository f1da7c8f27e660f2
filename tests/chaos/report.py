"""The soak's result: one table on stdout, the same numbers as JSON (``--json``).

The invariants come first, each with ``ok`` or ``VIOLATED``; then the context that says
whether the soak actually tested anything (pods churned, kills, faults that really fired,
Vast calls). A green table with zero kills or zero faults would be a false comfort.
"""

from __future__ import annotations

import msgspec

from tests.chaos.audit import Findings

OFFER_CREATE = "PUT /api/v0/asks/{id}/"
"""Where a taken offer answers 404 (``no_such_ask``)."""

LABELS = {
    "instances_leaked": "instances leaked",
    "pods_double_bought": "pods with two instances alive at once",
    "instances_above_cap": "instances bought above price-max",
    "pods_stuck_terminating": "pods stuck Terminating",
    "pods_never_reconciled": "pods never reconciled",
    "pods_not_converged": "pods not converged",
    "secrets_exposed": "outputs showing a secret",
    "secrets_sent_to_vast": "create requests holding a secret",
    "agent_processes_restarted": "agent pods restarted in place",
}


class Context(msgspec.Struct, kw_only=True):
    """What happened during the soak, beside the invariants."""

    pods: int
    duration: float
    seed: int
    pods_created: int
    pods_deleted: int
    pods_force_deleted: int
    kills: int
    kill_times: list[float]
    """Seconds after the soak began."""
    node_starts: int
    replicas: int = 1
    """Node processes; above 1 each kill was the elected leader's, taken over by a standby."""
    settled_after: float | None
    """Seconds of settling until every invariant that time can fix held; None: never."""
    settle_bound: float
    fault_rates: dict[str, float]
    vast_calls: int
    vast_errors: dict[str, int]
    """Error answers by endpoint and status (``"PUT /api/v0/asks/{id}/ 404"``), as counted by
    the simulator."""
    faults_seen: dict[str, int]
    """Request-level faults the node met: ``429``, ``5xx`` (lost create answers included)
    and ``offer_taken``; instance-level ones show in ``node_events`` (BootTimeout,
    StartFailed, BackOff)."""
    outbids: int = 0
    """Interruptible instances the soak outbid (``/_sim/faults``)."""
    resumes: int = 0
    """Outbid instances it resumed (the others: the pod's ``vast.ai/on-outbid`` policy)."""
    node_events: dict[str, int]
    """Events the node recorded on the soak's pods, by reason (counts aggregated)."""
    run_dir: str
    agent: bool = False
    """The agent mode: instances ran their process, some pods under the agent."""
    agent_pods: int = 0
    """Pods created to run under the agent."""


class Report(msgspec.Struct, kw_only=True):
    instances_created: int
    invariants: dict[str, int]
    context: Context
    evidence: Findings

    @property
    def passed(self) -> bool:
        return not any(self.invariants.values())


def make_report(findings: Findings, context: Context) -> Report:
    return Report(
        instances_created=findings.instances_created,
        invariants=findings.invariants(),
        context=context,
        evidence=findings,
    )


def vast_numbers(stats: dict[str, int]) -> tuple[int, dict[str, int], dict[str, int]]:
    """Total calls, error answers and the faults among them, from ``/_sim/stats``.

    Stats count each call under ``"METHOD /path"`` and each error answer again under
    ``"METHOD /path STATUS"``.
    """
    calls = sum(n for key, n in stats.items() if not key.rsplit(" ", 1)[-1].isdigit())
    errors = {key: n for key, n in sorted(stats.items()) if key.rsplit(" ", 1)[-1].isdigit()}
    faults = {"429": 0, "5xx": 0, "offer_taken": 0}
    for key, n in errors.items():
        endpoint, status = key.rsplit(" ", 1)
        if status == "429":
            faults["429"] += n
        elif status.startswith("5"):
            faults["5xx"] += n
        elif (endpoint, status) == (OFFER_CREATE, "404"):
            faults["offer_taken"] += n
    return calls, errors, faults


def render(report: Report) -> str:
    """The one table."""
    c, e = report.context, report.evidence
    lines = [
        f"== chaos soak: {c.pods} pods, {c.duration:.0f} s, {c.kills} kills, seed {c.seed}"
        + (f", {c.replicas} replicas" if c.replicas > 1 else "")
        + (", agent" if c.agent else ""),
        _row("instances created", report.instances_created),
    ]
    for name, count in report.invariants.items():
        lines.append(_row(LABELS[name], count, "ok" if count == 0 else "VIOLATED"))
    settled = "never" if c.settled_after is None else f"{c.settled_after:.1f} s"
    lines += [
        "-- context",
        _row(
            "pods created / deleted / force-deleted",
            f"{c.pods_created} / {c.pods_deleted} / {c.pods_force_deleted}",
        ),
        *(
            [
                _row(
                    "agent pods created / judged at the end",
                    f"{c.agent_pods} / {e.agent_judged}",
                )
            ]
            if c.agent
            else []
        ),
        _row("node SIGKILLs / starts", f"{c.kills} / {c.node_starts}"),
        _row("kill times (s)", ", ".join(f"{t:.1f}" for t in c.kill_times) or "-"),
        _row("settled after", f"{settled} (bound {c.settle_bound:.0f} s)"),
        _row("Vast calls", c.vast_calls),
        _row("faults met (requests)", _pairs(c.faults_seen)),
        _row("fault rates", _pairs({k: v for k, v in c.fault_rates.items() if v})),
        _row("outbids / resumed", f"{c.outbids} / {c.resumes}"),
        _row("node events", _pairs(c.node_events)),
        _row("run directory", c.run_dir),
    ]
    return "\n".join(lines)


def _row(label: str, value: object, verdict: str = "") -> str:
    return f"   {label:<40} {value!s:<6} {verdict}".rstrip()


def _pairs(values: dict[str, int] | dict[str, float]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "-"
