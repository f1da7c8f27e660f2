"""Leader election over a Lease: of several replicas, one drives the node (``--leader-elect``).

The protocol is client-go's ``tools/leaderelection`` with a ``LeaseLock``, so ``kubectl get
lease`` reads the same as for kube-scheduler or kube-controller-manager:

- The Lease ``vk-trio-<node>`` (``coordination.k8s.io/v1``, in the Deployment's namespace)
  holds ``holderIdentity`` (the pod name), ``leaseDurationSeconds``, ``acquireTime``,
  ``renewTime`` and ``leaseTransitions`` (how often it changed hands).
- Every write is a PUT carrying the ``resourceVersion`` it read (optimistic concurrency): of
  two replicas writing at once, one gets 409 Conflict and has not acquired anything.
- A standby GETs the Lease every ``retry_period`` (2 s). It takes it over only when the record
  has not changed for ``leaseDurationSeconds`` (15 s) *as measured on its own clock since it
  last saw the record change*: the clocks of the replicas need not agree, only tick at about
  the same rate (``renewTime`` is informational). An empty ``holderIdentity`` (a released
  Lease) is taken at once.
- The leader renews every ``retry_period``. If no renewal succeeds within ``renew_deadline``
  (10 s) of the last good one, or the Lease shows another holder, it has lost.
- A leader stopping gracefully (SIGTERM) releases the Lease: ``holderIdentity`` cleared,
  ``leaseDurationSeconds`` 1, so a standby takes over within one ``retry_period``.

Fencing (what stops a deposed leader): the leader's driving scope, the root nursery of
``vk-trio run`` that holds the node status, the Lease heartbeat, the poller, the reaper and
every pod task, gets a trio *deadline* of ``renew_deadline`` past the start of the last
successful renewal, moved forward by every renewal. If renewals stop succeeding, for any reason
(the API server is unreachable, this task is starved, the Lease was taken), trio cancels that
scope at the deadline without anyone having to notice: no Vast call, node heartbeat or status
write of that scope starts after it. Seeing the Lease held by another cancels it at once. A
standby cannot take the Lease before ``lease_duration`` after it saw the last renewal, which
was sent after the renewal's start; since ``renew_deadline < lease_duration`` (checked), the
old leader has stopped starting calls ``lease_duration - renew_deadline`` (5 s) before a new
one can exist. ``Elector.fence`` is also checked by the Vast client right before a create or
destroy leaves (those exchanges are shielded from cancellation once under way, so that an
instance's id is never lost): a create is never *sent* by a replica whose deadline has passed.

Limits, stated plainly: the guarantee assumes the replicas' clocks run at about the same rate
(the same assumption as client-go) and that a request takes less than the 5 s margin from
leaving to being executed by Vast; a create that left just before the deadline and lands late
is not prevented, since Vast has no fencing token to reject it. Such an instance carries the
pod's label and the ``vast.ai/buying`` annotation was written before it was sent, so the new
leader's adoption finds it (and keeps one instance if two exist): no leak, at worst a brief
second instance. A process frozen (SIGSTOP, a VM pause) longer than the margin after checking
the fence and before its bytes leave is the same case.

After losing, the caller drops every state it drove (``LeadershipLost``) and stands by again;
the node itself is left alone: the new leader is driving it.
"""

from __future__ import annotations

import copy
import math
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from loguru import logger

from vk_trio.errors import Fenced, PermanentError
from vk_trio.kube.api import KubeClient, format_micro_time, utcnow
from vk_trio.kube.errors import KubeConflict, KubeError, KubeNotFound
from vk_trio.retry import NO_RETRY

__all__ = [
    "JITTER_FACTOR",
    "LEASE_DURATION",
    "RENEW_DEADLINE",
    "RETRY_PERIOD",
    "Election",
    "Elector",
    "default_identity",
    "lease_name",
]

LEASE_DURATION = 15
"""Seconds (client-go's ``LeaseDuration``): a standby waits this long after the last change it
saw before it takes the Lease."""
RENEW_DEADLINE = 10.0
"""Seconds (client-go's ``RenewDeadline``): a leader that could not renew for this long stops."""
RETRY_PERIOD = 2.0
"""Seconds (client-go's ``RetryPeriod``) between a standby's tries and a leader's renewals."""
JITTER_FACTOR = 1.2
"""client-go's bound: ``renew_deadline`` must exceed this many ``retry_period``s."""


def lease_name(node_name: str) -> str:
    """``vk-trio-<node>``: one election per virtual node."""
    return f"vk-trio-{node_name}"


def default_identity() -> str:
    """``<hostname>_<random>`` when the pod name is not given (client-go's examples do this)."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, kw_only=True)
class Election:
    """Where the Lease is, who we are, and the timings (client-go's defaults)."""

    namespace: str
    name: str
    identity: str
    lease_duration: int = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs an identity")
        if not (0 < self.retry_period * JITTER_FACTOR < self.renew_deadline < self.lease_duration):
            raise ValueError(
                "leader election needs retry_period x 1.2 < renew_deadline < lease_duration, "
                f"got {self.retry_period}, {self.renew_deadline}, {self.lease_duration}"
            )

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"


_Record = tuple[Any, ...]


def _record(lease: dict[str, Any]) -> _Record:
    """What a standby compares to tell a live leader from a dead one (client-go's record)."""
    spec = lease.get("spec") or {}
    return tuple(
        spec.get(field)
        for field in (
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
        )
    )


class Elector:
    """One replica's side of the election; ``run`` campaigns, leads, and fences on loss.

    Read by others: ``leading``, ``leader`` (the last holder seen, ``""`` when none), ``holds()``
    (leading and within the renew deadline), ``fence(what)`` (raises ``Fenced`` unless
    ``holds()``), ``standby_message()`` and ``standby_problem()`` for ``/readyz``.
    """

    def __init__(self, election: Election) -> None:
        self.election = election
        self.leader = ""
        self.leading = False
        self.valid_until = -math.inf
        """Trio time at which leadership ends unless renewed: the driving scope's deadline."""
        self.lost: str | None = None
        """Why leadership was lost, once it was (None while leading or never led)."""
        self.last_answer: float | None = None
        """Trio time of the API server's last answer to the election."""
        self._client: KubeClient | None = None
        self._cached: dict[str, Any] | None = None
        self._observed: _Record | None = None
        self._observed_at = -math.inf

    # ----- what others read -------------------------------------------------------------

    def holds(self) -> bool:
        """Leading, and the last renewal is recent enough that nobody else can hold it."""
        return self.leading and self.lost is None and trio.current_time() < self.valid_until

    def fence(self, what: str) -> None:
        """Raise ``Fenced`` unless this replica holds the Lease (check right before sending)."""
        if not self.holds():
            raise Fenced(f"{what} not sent: this replica no longer holds {self.election.name}")

    def standby_message(self) -> str | None:
        """``standby: leader is X`` while standing by; None while leading."""
        if self.leading:
            return None
        return f"standby: leader is {self.leader or 'nobody yet'}"

    def standby_problem(self) -> str | None:
        """Why this standby could not take over now (the API server does not answer)."""
        if self.leading:
            return None
        if self.last_answer is None:
            return "standby: the API server has not answered the election yet"
        silent = trio.current_time() - self.last_answer
        if silent > self.election.lease_duration:
            return f"standby: the API server has not answered the election for {silent:.0f}s"
        return None

    def lost_leadership(self) -> str | None:
        """Why leadership was lost (a Lease seen taken, or the renew deadline passed)."""
        if self.lost is not None:
            return self.lost
        if self.leading and trio.current_time() >= self.valid_until:
            return f"no renewal of {self.election.name} within {self.election.renew_deadline}s"
        return None

    # ----- the task -------------------------------------------------------------------------

    async def run(
        self,
        client: KubeClient,
        fence: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stand by until this replica holds the Lease, report started, then keep it.

        ``fence`` is the scope of everything the leader drives (this task included): its
        deadline follows each renewal, and it is cancelled as soon as the Lease is lost.
        Escalates ``PermanentError`` (RBAC: the Lease may not be read or written) until the
        API server has answered once; transient errors are logged and retried forever.
        """
        self._client = client
        election = self.election
        logger.info(
            "standing by for leader election",
            lease=f"{election.namespace}/{election.name}",
            identity=election.identity,
        )
        await self._campaign()
        fence.deadline = self.valid_until
        task_status.started()
        await self._keep(fence)
        logger.warning("stopped leading", lease=election.name, reason=self.lost_leadership())
        fence.cancel()

    async def _campaign(self) -> None:
        """Try every ``retry_period`` until this replica holds the Lease."""
        reported = None
        while True:
            with trio.move_on_after(self.election.renew_deadline):
                try:
                    if await self._try():
                        return
                except PermanentError:
                    if self.last_answer is None:
                        raise  # RBAC, most likely: say so at start, not forever in a log
                    logger.exception("leader election refused", lease=self.election.name)
                except KubeError as error:
                    logger.warning(
                        "leader election failed; retrying",
                        lease=self.election.name,
                        error=str(error),
                    )
            if self.leader != reported:
                reported = self.leader
                logger.info("standing by", lease=self.election.name, leader=self.leader)
            await trio.sleep(self.election.retry_period)

    async def _keep(self, fence: trio.CancelScope) -> None:
        """Renew every ``retry_period`` until a renewal fails for good; then return."""
        while True:
            await trio.sleep(self.election.retry_period)
            while True:
                try:
                    renewed = await self._try()
                except KubeError as error:
                    renewed = False
                    logger.warning(
                        "lease renewal failed", lease=self.election.name, error=str(error)
                    )
                if renewed:
                    fence.deadline = self.valid_until
                    break
                if self.lost_leadership() is not None:
                    return
                await trio.sleep(self.election.retry_period)

    async def _try(self) -> bool:
        """client-go's ``tryAcquireOrRenew``: one round; True when this replica holds it."""
        election = self.election
        client = self._require_client()
        started = trio.current_time()
        if self.leading and self._cached is not None:
            # The leader renews what it wrote last, without a GET (as client-go does now);
            # a 409 means someone else wrote since: read and decide below.
            try:
                return self._won(await self._put(self._renewed(self._cached)), started)
            except KubeConflict:
                logger.info("lease changed under the leader; re-reading", lease=election.name)
        try:
            lease: dict[str, Any] = await client.request("GET", election.path, retry=NO_RETRY)
        except KubeNotFound:
            self.last_answer = trio.current_time()
            try:
                created = await client.request(
                    "POST", election.path.rsplit("/", 1)[0], json=self._new(), retry=NO_RETRY
                )
            except KubeConflict:
                return False  # another replica created it first
            return self._won(created, started)
        self.last_answer = trio.current_time()
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, trio.current_time()
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        self.leader = holder
        if holder and holder != election.identity:
            if self.leading:
                self.lost = f"the Lease {election.name} is held by {holder}"
                return False
            duration = spec.get("leaseDurationSeconds") or election.lease_duration
            if trio.current_time() < self._observed_at + duration:
                return False  # held, and renewed within its duration as far as we have seen
        try:
            return self._won(await self._put(self._renewed(lease)), started)
        except KubeConflict:
            return False  # someone wrote first (the leader renewing, or another standby)

    def _new(self) -> dict[str, Any]:
        now = format_micro_time(utcnow())
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.election.name, "namespace": self.election.namespace},
            "spec": {
                "holderIdentity": self.election.identity,
                "leaseDurationSeconds": self.election.lease_duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }

    def _renewed(self, lease: dict[str, Any]) -> dict[str, Any]:
        """``lease`` (its resourceVersion included) held by us, renewed now."""
        lease = copy.deepcopy(lease)
        spec = lease.setdefault("spec", {})
        now = format_micro_time(utcnow())
        ours = spec.get("holderIdentity") == self.election.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        spec.update(
            holderIdentity=self.election.identity,
            leaseDurationSeconds=self.election.lease_duration,
            renewTime=now,
            acquireTime=spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            leaseTransitions=transitions if ours else transitions + 1,
        )
        return lease

    async def _put(self, lease: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._require_client().request(
            "PUT", self.election.path, json=lease, retry=NO_RETRY
        )
        self.last_answer = trio.current_time()
        return result

    def _won(self, lease: dict[str, Any], started: float) -> bool:
        """Record a successful write of ours, sent no earlier than ``started``."""
        self._cached = lease
        self._observed, self._observed_at = _record(lease), trio.current_time()
        self.leader = self.election.identity
        self.valid_until = started + self.election.renew_deadline
        if not self.leading:
            self.leading = True
            logger.info(
                "became leader",
                lease=f"{self.election.namespace}/{self.election.name}",
                identity=self.election.identity,
                transitions=(lease.get("spec") or {}).get("leaseTransitions"),
            )
        return True

    async def release(self) -> None:
        """Give the Lease up if we still hold it (graceful stop): a standby takes it at once.

        As client-go's ``ReleaseOnCancel``: ``holderIdentity`` cleared, duration 1 s. Call it
        only after everything the leader drove has stopped. Failures are logged, not raised:
        the Lease then simply expires.
        """
        if not self.holds() or self._cached is None:
            self.leading = False
            return
        lease = copy.deepcopy(self._cached)
        spec = lease.setdefault("spec", {})
        now = format_micro_time(utcnow())
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
        try:
            self._cached = await self._put(lease)
            logger.info("released the leader Lease", lease=self.election.name)
        except KubeError as error:
            logger.warning(
                "could not release the leader Lease; it expires instead",
                lease=self.election.name,
                error=str(error),
            )
        self.leading = False
        self.leader = ""

    def _require_client(self) -> KubeClient:
        if self._client is None:
            raise RuntimeError("Elector.run has not been called")
        return self._client
