"""The account's money, each slow sweep: its credit (stop buying before it runs dry) and what
each pod's instances cost (written on the pod, compared with Vast's charges).

``CreditWatch`` reads ``credit`` from ``GET /api/v0/users/current/`` and works out how long it
lasts at the node's spend (``poller.spend_per_hour``). A pod may buy only while the credit
would last ``--credit-stop-hours`` at the node's spend plus the pod's price (``refusal``: the
pod waits with ``CreditLow``, re-checked each slow sweep). Below ``--credit-warn-hours`` at the
current spend a Warning Event goes to the Node first; the Node hears once per change of state
(ok, low, buying stopped), ``/readyz`` says it while buying is stopped, and ``/metrics`` carries
the credit and the hours left. Adding credit resumes buying at the next read.

``CostRecorder`` writes each pod's ``vast.ai/cost`` record (``cost.CostBook``) each slow sweep
and once more when the pod ends, and every few minutes compares the node's sum with Vast's
charges (``GET /api/v0/charges/``), logging how far apart they are.

Secondary work: a failed read or write is logged and tried again next sweep; buying goes on
as last decided while the credit cannot be read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import trio
from loguru import logger

from vk_trio.annotations import COST
from vk_trio.errors import VkError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.models import ObjectMeta, Pod
from vk_trio.kube.pods import patch_pod_annotations
from vk_trio.provider.cost import CostBook
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import VastClient

__all__ = ["CHARGES_WINDOW", "RECONCILE_EVERY", "CostRecorder", "CreditState", "CreditWatch"]

CHARGES_WINDOW = 7 * 24 * 3600.0
"""Seconds of Vast's charges compared with the node's meters (the CLI's default window)."""

RECONCILE_EVERY = 300.0
"""Seconds between comparisons with Vast's charges: a page per 100 instances of the account's
week, too many to read each slow sweep on a busy account (Vast's own charges lag anyway)."""

NodeEvent = Callable[[str, str, str], Awaitable[None]]
"""``(type, reason, message)``: posts an Event about the Node; never raises."""


class CreditState(Enum):
    OK = "ok"
    LOW = "low"
    """Below ``--credit-warn-hours``: warned, still buying."""
    STOPPED = "stopped"
    """Below ``--credit-stop-hours`` (or none left): buying stopped."""


class CreditWatch:
    """The account's credit as last read, and whether pods may buy."""

    def __init__(
        self,
        vast: VastClient,
        poller: InstancePoller,
        *,
        stop_hours: float,
        warn_hours: float,
        interval: float,
        node_event: NodeEvent,
    ) -> None:
        self._vast = vast
        self._poller = poller
        self._stop_hours = stop_hours
        self._warn_hours = warn_hours
        self._interval = interval
        self._node_event = node_event
        self.credit: float | None = None
        """USD left on the account as last read; None before the first read."""
        self.state = CreditState.OK
        self._refused_at = -math.inf

    def hours_left(self) -> float:
        """Hours the credit lasts at the node's current spend (inf when nothing bills)."""
        if self.credit is None:
            return math.inf
        spend = self._poller.spend_per_hour()
        if self.credit <= 0:
            return 0.0
        return self.credit / spend if spend > 0 else math.inf

    def refusal(self, price: float) -> str | None:
        """Why a pod may not buy at ``price`` USD/h now, or None (unknown credit: buy)."""
        credit = self.credit
        if credit is None:
            return None
        spend = self._poller.spend_per_hour() + price
        if credit > 0 and credit >= self._stop_hours * spend:
            return None
        self._refused_at = trio.current_time()
        lasts = credit / spend if spend > 0 else 0.0
        return (
            f"Vast account credit low: ${credit:.2f} left lasts {max(lasts, 0.0):.2f} h at "
            f"${spend:.3f}/h (this pod included), under --credit-stop-hours "
            f"{self._stop_hours:g} h; add credit on Vast.ai to resume buying"
        )

    def problem(self) -> str | None:
        """For ``/readyz``: why the node buys nothing, while it does not."""
        if self.state is not CreditState.STOPPED:
            return None
        return f"Vast account credit low (${self.credit or 0.0:.2f} left): buying stopped"

    async def run(self) -> None:
        """Read the credit every ``interval`` seconds until cancelled (``check`` first, to
        know it before the first pod buys)."""
        while True:
            await trio.sleep(self._interval)
            await self.check()

    async def check(self) -> None:
        """Read the credit once and tell the Node when its state changed."""
        try:
            self.credit = await self._vast.credit()
        except VkError as exc:
            logger.warning("cannot read the Vast account's credit", error=str(exc))
            return
        hours = self.hours_left()
        # Waiting pods retry each slow sweep: one refused within two sweeps still waits.
        refusing = trio.current_time() - self._refused_at < 2 * self._interval
        state = CreditState.OK
        if self.credit <= 0 or hours < self._stop_hours or refusing:
            state = CreditState.STOPPED
        elif hours < self._warn_hours:
            state = CreditState.LOW
        if state is not self.state:
            self.state = state
            await self._tell(state, hours)

    async def _tell(self, state: CreditState, hours: float) -> None:
        credit = self.credit or 0.0
        lasts = "no spend now" if math.isinf(hours) else f"{hours:.1f} h at the current spend"
        if state is CreditState.OK:
            reason, kind, what = "CreditOK", "Normal", "buying as usual"
        elif state is CreditState.LOW:
            reason, kind = "CreditLow", "Warning"
            what = f"under --credit-warn-hours {self._warn_hours:g} h; add credit soon"
        else:
            reason, kind = "CreditExhausted", "Warning"
            what = f"under --credit-stop-hours {self._stop_hours:g} h: buying stopped"
        message = f"Vast account credit ${credit:.2f} ({lasts}): {what}"
        logger.warning("vast credit", state=state.value, credit=credit, detail=message)
        await self._node_event(kind, reason, message)


class CostRecorder:
    """Writes each pod's cost record and compares the node's sum with Vast's charges."""

    def __init__(
        self, book: CostBook, kube: KubeClient, vast: VastClient, *, interval: float
    ) -> None:
        self._book = book
        self._kube = kube
        self._vast = vast
        self._interval = interval

    async def run(self) -> None:
        """Each slow sweep: write what changed; every ``RECONCILE_EVERY``: reconcile."""
        reconcile_at = trio.current_time() + RECONCILE_EVERY
        while True:
            await trio.sleep(self._interval)
            for uid in self._book.uids():
                await self.write(uid)
            if trio.current_time() >= reconcile_at:
                reconcile_at = trio.current_time() + RECONCILE_EVERY
                await self.reconcile()

    async def write(self, uid: str, pod: Pod | None = None) -> None:
        """Write pod ``uid``'s cost record if it changed (``pod`` when the caller has it)."""
        now = trio.current_time()
        annotations = self._book.record(uid, now)
        owner = self._book.owner(uid)
        if annotations is None or owner is None:
            return
        if pod is None:
            pod = Pod(metadata=ObjectMeta(name=owner.name, namespace=owner.namespace, uid=uid))
        try:
            await patch_pod_annotations(self._kube, pod, annotations)
        except VkError as exc:
            logger.bind(pod=pod.key, uid=uid).warning("cost annotation failed", error=str(exc))
            return
        self._book.written(uid, annotations[COST] or "")

    async def final(self, pod: Pod) -> None:
        """The pod ended and its instances are destroyed: write its last record."""
        await self.write(pod.uid, pod)

    async def reconcile(self) -> None:
        """Log how far the node's meters are from Vast's charges for the same instances."""
        until = time.time()  # an API timestamp, not a duration
        try:
            charges = await self._vast.charges(since=until - CHARGES_WINDOW, until=until)
        except VkError as exc:
            logger.info("cannot read Vast's charges; not reconciled", error=str(exc))
            return
        result = self._book.reconcile(charges, trio.current_time())
        if result.instances:
            logger.info(
                "cost reconciled with Vast's charges",
                instances=result.instances,
                node_usd=round(result.node, 6),
                vast_usd=round(result.vast, 6),
                gap_usd=round(result.gap, 6),
                gap_percent=round(100 * result.gap_ratio, 3),
            )

    def stats(self) -> dict[str, Any]:
        """For ``/debug/vars``: the last reconciliation."""
        result = self._book.last_reconciliation
        if result is None:
            return {}
        return {
            "instances": result.instances,
            "node_usd": result.node,
            "vast_usd": result.vast,
            "gap_usd": result.gap,
        }
