"""The audit: what must hold after any soak, computed from records the node cannot alter.

Pure functions of the Vast simulator's ledger (every instance ever created, with its label,
price, and create/destroy times on the simulator's clock), the pods the Kubernetes API holds
at the end, and the price cap of every pod the workload created (a deleted pod's cap is no
longer in the API). No I/O here, so the audit can be shown to *fail* on synthetic ledgers
(``tests/chaos/test_chaos.py``): a harness that cannot fail proves nothing.

The invariants, each a count that must be 0:

- ``instances_leaked``: alive at the end, but not for a live pod: the label's UID belongs to a
  deleted or finished pod, or to no pod of this node (someone pays for a GPU nobody uses);
- ``pods_double_bought``: pods that ever had two instances alive at the same time;
- ``instances_above_cap``: bought above the pod's ``vast.ai/price-max`` (storage included,
  as the annotation means);
- ``pods_stuck_terminating``: still in the API with a ``deletionTimestamp``;
- ``pods_never_reconciled``: live pods the node never wrote a container status for;
- ``pods_not_converged``: live pods neither Running on an instance, finished, nor waiting for
  a reason that lasts without faults (no offer under the cap);
- ``secrets_exposed``: places (a node log, the Events, the pods) where the Vast API key or a
  Secret value the workload created appears; they belong on the instance and nowhere else.

Two more, which only the agent mode can break (zero otherwise):

- ``secrets_sent_to_vast``: create requests (as the simulator kept them) holding a Secret
  value: under the agent, the pod's env and volumes go over the link, never through Vast;
- ``agent_processes_restarted``: pods under the agent, Running at the end with their container
  running, whose process was not started exactly once on the instance that runs it (the agent
  logs each start into the instance's log; the soak reads it through Vast's log API). Their
  process never exits on its own during a soak, so a second start is a restart in place: a
  SIGKILLed node that, once back, restarted the process instead of reconnecting to the agent.
  Not ``restartCount``: the node also counts a restart for each new instance, and for a buy
  that was in flight when it was killed and rented nothing (``InstanceLost``), so the count
  says nothing about the process on the instance that runs it now.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping

import msgspec

from vk_trio.provider.labels import label_owner

LEGIT_WAITING = frozenset({"NoMatchingOffers", "PriceCapExceeded"})
"""Waiting reasons that are an answer, not a failure to converge: the market has nothing."""
PRICE_EPSILON = 1e-6
"""Prices are floats computed on both sides; a cap is exceeded by more than rounding."""
TERMINAL = frozenset({"Succeeded", "Failed"})


class LedgerRow(msgspec.Struct):
    """One row of ``GET /_sim/ledger`` (the fields the audit reads)."""

    id: int
    label: str | None
    dph_total: float
    created_at: float
    destroyed_at: float | None


class _Waiting(msgspec.Struct):
    reason: str | None = None


class _State(msgspec.Struct):
    waiting: _Waiting | None = None
    running: dict[str, object] | None = None


class _ContainerStatus(msgspec.Struct):
    state: _State = msgspec.field(default_factory=_State)


class _Status(msgspec.Struct, rename="camel"):
    phase: str | None = None
    message: str | None = None
    pod_ip: str | None = msgspec.field(default=None, name="podIP")
    container_statuses: list[_ContainerStatus] = []


class _Meta(msgspec.Struct, rename="camel"):
    name: str
    uid: str
    deletion_timestamp: str | None = None


class PodObject(msgspec.Struct):
    """A pod as the API lists it (the fields the audit reads)."""

    metadata: _Meta
    status: _Status = msgspec.field(default_factory=_Status)

    @property
    def deleting(self) -> bool:
        return self.metadata.deletion_timestamp is not None

    @property
    def waiting_reason(self) -> str | None:
        return next(
            (c.state.waiting.reason for c in self.status.container_statuses if c.state.waiting),
            None,
        )


class Findings(msgspec.Struct, kw_only=True):
    """The invariants' violations, each named so that it can be looked up in the evidence."""

    instances_created: int
    leaked: list[int]
    """Instance ids."""
    double_bought: list[str]
    """Pod UIDs."""
    above_cap: list[int]
    """Instance ids."""
    stuck_terminating: list[str]
    """Pod names."""
    never_reconciled: list[str]
    """Pod names."""
    not_converged: list[str]
    """``"name: why"``."""
    secrets_exposed: list[str] = []
    """Names of the texts a secret appeared in (filled in once, at the end: see ``exposed``)."""
    secrets_sent_to_vast: list[str] = []
    """``create request N`` (the Nth instance created) holding a Secret value (agent mode;
    filled in at the end, with ``exposed``)."""
    agent_restarted: list[str] = []
    """``"name: started N times on instance I"`` for the ``agent_running`` pods not started
    exactly once (filled in at the end: see ``restarted_in_place``)."""
    agent_running: dict[str, str] = {}
    """UID → name of the pods under the agent Running with their container running: those
    whose restarts can be judged (the others are ``not_converged``)."""
    agent_judged: int = 0
    """How many of them were judged (their instance still there to read its log): not an
    invariant, the proof that ``agent_restarted`` was not checked on nothing."""

    def invariants(self) -> dict[str, int]:
        """Each invariant's count; every one must be 0."""
        return {
            "instances_leaked": len(self.leaked),
            "pods_double_bought": len(self.double_bought),
            "instances_above_cap": len(self.above_cap),
            "pods_stuck_terminating": len(self.stuck_terminating),
            "pods_never_reconciled": len(self.never_reconciled),
            "pods_not_converged": len(self.not_converged),
            "secrets_exposed": len(self.secrets_exposed),
            "secrets_sent_to_vast": len(self.secrets_sent_to_vast),
            "agent_processes_restarted": len(self.agent_restarted),
        }

    @property
    def settled(self) -> bool:
        """Nothing left that time could still fix (double buys and caps are history)."""
        return not (
            self.leaked or self.stuck_terminating or self.never_reconciled or self.not_converged
        )


def audit(
    ledger: Iterable[LedgerRow],
    pods: Iterable[PodObject],
    caps: Mapping[str, float],
    *,
    node: str,
    agent_pods: Collection[str] = frozenset(),
) -> Findings:
    """Check the invariants (see the module docstring); ``caps`` maps pod UID → price-max,
    ``agent_pods`` holds the UIDs of the pods the workload put under the agent."""
    rows = list(ledger)
    pods = list(pods)
    alive: dict[str | None, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        if row.destroyed_at is None:
            alive[_uid(row.label, node)].append(row)
    live = {p.metadata.uid for p in pods if not p.deleting and p.status.phase not in TERMINAL}
    return Findings(
        instances_created=len(rows),
        leaked=sorted(r.id for uid, group in alive.items() if uid not in live for r in group),
        double_bought=_double_bought(rows, node),
        above_cap=[
            r.id
            for r in rows
            if (cap := caps.get(_uid(r.label, node) or "")) is not None
            and r.dph_total > cap + PRICE_EPSILON
        ],
        stuck_terminating=sorted(p.metadata.name for p in pods if p.deleting),
        never_reconciled=sorted(
            p.metadata.name for p in pods if not p.deleting and not p.status.container_statuses
        ),
        not_converged=sorted(
            f"{p.metadata.name}: {why}"
            for p in pods
            if not p.deleting and p.status.container_statuses
            if (why := _unconverged(p, bool(alive.get(p.metadata.uid)))) is not None
        ),
        agent_running=_agent_running(pods, agent_pods),
    )


def _agent_running(pods: list[PodObject], agent_pods: Collection[str]) -> dict[str, str]:
    """UID → name of the ``agent_pods`` Running with their container running."""
    return {
        pod.metadata.uid: pod.metadata.name
        for pod in pods
        if pod.metadata.uid in agent_pods and pod.status.phase == "Running"
        if any(c.state.running is not None for c in pod.status.container_statuses)
    }


def restarted_in_place(
    running: Mapping[str, str], starts: Mapping[str, tuple[int | None, int | None]]
) -> list[str]:
    """The ``running`` pods (UID → name) whose process was not started exactly once on the
    instance that runs it; ``starts`` maps UID → (starts in its log, instance id or None).
    No start seen is a violation too: a log that cannot be read, or that no longer says when
    the process starts, must not pass for a clean run. A count of None is not judged: the
    instance ended (a fault drawn at its birth) before its log was read."""
    restarted = []
    for uid, name in running.items():
        count, instance = starts.get(uid, (0, None))
        if count is not None and count != 1:
            restarted.append(f"{name}: started {count} times on instance {instance}")
    return sorted(restarted)


def _double_bought(rows: list[LedgerRow], node: str) -> list[str]:
    """UIDs whose instances' lifetimes ``[created_at, destroyed_at)`` ever overlapped."""
    lifetimes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        uid = _uid(row.label, node)
        if uid is not None:
            end = math.inf if row.destroyed_at is None else row.destroyed_at
            lifetimes[uid].append((row.created_at, end))
    doubled = []
    for uid, spans in lifetimes.items():
        latest_end = -math.inf
        for start, end in sorted(spans):
            if start < latest_end:
                doubled.append(uid)
                break
            latest_end = max(latest_end, end)
    return sorted(doubled)


def _unconverged(pod: PodObject, has_instance: bool) -> str | None:
    """Why a live, reconciled pod has not converged; None when it has."""
    phase = pod.status.phase
    if phase in TERMINAL:
        return None
    reason = pod.waiting_reason
    if phase == "Running" and reason is None:
        return None if has_instance else "Running without an instance"
    if phase == "Pending" and reason in LEGIT_WAITING:
        return None
    detail = "; ".join(filter(None, (reason or "no reason", pod.status.message)))
    return f"{phase} ({detail})"


def exposed(secrets: Iterable[str], texts: Mapping[str, str]) -> list[str]:
    """The names of ``texts`` (name → content) in which any of ``secrets`` appears."""
    wanted = [secret for secret in secrets if secret]
    return sorted(name for name, text in texts.items() if any(s in text for s in wanted))


def _uid(label: str | None, node: str) -> str | None:
    owner = label_owner(label, node)
    return owner.uid if owner else None
