"""One poller per node: a single instance-list sweep per tick feeds every pod task.

Polling Vast per pod made the last attempts hit rate limits (dstack #4031) and would make Vast
calls grow with pods. Here the number of calls per tick is the number of list pages (25
instances each), whatever the number of pods: one ``GET /api/v1/instances/`` sweep, filtered
to this node's labels, is split by pod UID and each pod task wakes only when *its* instances
changed.

Labels carry identity (``labels.py``): every instance is traceable to exactly one pod UID.

The poller ticks fast (``poll_fast``) while any instance boots or a caller asked for a fresh
sweep, slow (``poll_slow``) otherwise. A failed sweep keeps the last good snapshot and is
retried on the next tick; ``last_success`` tells the readiness probe whether Vast answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import trio
from loguru import logger

from vk_trio.errors import TemporaryError, VkError
from vk_trio.provider.labels import LabelOwner, label_owner
from vk_trio.vast import Instance, VastClient

BOOTING = (None, "created", "loading", "scheduling", "rebooting")


@dataclass
class _Slot:
    """Per-UID state: the instances seen in the last sweep and a change counter."""

    instances: tuple[Instance, ...] = ()
    version: int = 0
    changed: trio.Event = field(default_factory=trio.Event)


class InstancePoller:
    """Sweeps this node's instances and tells each pod task when its instances change."""

    def __init__(
        self, vast: VastClient, *, node: str, fast: float = 2.0, slow: float = 15.0
    ) -> None:
        self._vast = vast
        self._node = node
        self._fast = fast
        self._slow = slow
        self._slots: dict[str, _Slot] = defaultdict(_Slot)
        self._started = 0
        self._completed = 0
        self._last_ok = 0
        """Number of the last sweep that succeeded (sweeps are numbered from 1)."""
        self._swept = trio.Event()
        self._wake = trio.Event()
        self._hurry_until = 0.0
        self.last_success: float | None = None
        """``trio.current_time()`` of the last sweep that succeeded, None before the first."""
        self.last_failure: VkError | None = None
        """Why the last sweep failed; None after a success."""
        self.failures_in_a_row = 0
        self._rate = 0.0
        self._rate_since = trio.current_time()
        self._spent = 0.0

    # -- what pod tasks use -------------------------------------------------------------

    def instances(self, uid: str) -> tuple[Instance, ...]:
        """This UID's instances as of the last sweep."""
        slot = self._slots.get(uid)
        return slot.instances if slot else ()

    def owner(self, instance: Instance) -> LabelOwner | None:
        """The pod ``instance`` was bought for."""
        return label_owner(instance.label, self._node)

    def all_instances(self) -> list[Instance]:
        """Every instance of this node as of the last sweep."""
        return [instance for slot in self._slots.values() for instance in slot.instances]

    def spend_per_hour(self) -> float:
        """USD per hour this node's instances bill, as of the last sweep."""
        return self._rate

    def spent(self) -> float:
        """USD this node's instances have billed since this process started (as swept:
        each sweep's hourly total, held until the next sweep)."""
        return self._spent + self._rate * (trio.current_time() - self._rate_since) / 3600

    def all_uids(self) -> set[str]:
        """Every pod UID that has at least one instance in the last sweep."""
        return {uid for uid, slot in self._slots.items() if slot.instances}

    @property
    def sweeps(self) -> int:
        """Sweeps completed so far (each costs one list call per page of instances)."""
        return self._completed

    def version(self, uid: str) -> int:
        return self._slots[uid].version

    async def wait_changed(self, uid: str, since: int) -> tuple[Instance, ...]:
        """Wait until ``uid``'s instances differ from what version ``since`` saw."""
        slot = self._slots[uid]
        while slot.version == since:
            await slot.changed.wait()
        return slot.instances

    async def fresh(self) -> None:
        """Return once a sweep that *started after this call* has succeeded.

        Used before buying (an instance a previous process bought must be seen first) and to
        find and verify what a deletion must destroy: one sweep serves every waiting pod, so
        these checks cost list pages, not calls per pod. Asking wakes the poller at once.
        Raises ``TemporaryError`` when that sweep failed: nothing can be known, so nothing
        may be bought or declared gone.
        """
        target = self._started + 1
        self.hurry()
        while self._completed < target:
            await self._swept.wait()
        if self._last_ok < target:
            raise TemporaryError(f"cannot list Vast instances: {self.last_failure}")

    def hurry(self, seconds: float = 0.0) -> None:
        """Sweep now, and keep ticking fast for ``seconds`` (e.g. after a buy)."""
        self._hurry_until = max(self._hurry_until, trio.current_time() + seconds)
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep forever. Owns nothing but its snapshot; never raises on Vast errors.

        ``task_status.started()`` fires after the first sweep (successful or not), so the
        caller knows a first picture of the world exists before pods are handled.
        """
        first = True
        while True:
            self._wake = trio.Event()
            await self._sweep()
            if first:
                task_status.started()
                first = False
            with trio.move_on_after(self._interval()):
                await self._wake.wait()

    def _interval(self) -> float:
        booting = any(
            instance.actual_status in BOOTING
            for slot in self._slots.values()
            for instance in slot.instances
        )
        if booting or trio.current_time() < self._hurry_until:
            return self._fast
        return self._slow

    async def _sweep(self) -> None:
        self._started += 1
        number = self._started
        try:
            listed = await self._vast.list_instances()
        except VkError as exc:
            self.last_failure = exc
            self.failures_in_a_row += 1
            logger.warning("instance sweep failed; keeping the last snapshot", error=str(exc))
        else:
            self.last_success = trio.current_time()
            self.last_failure = None
            self.failures_in_a_row = 0
            self._last_ok = number
            self._publish(listed)
        finally:
            self._completed += 1
            swept, self._swept = self._swept, trio.Event()
            swept.set()

    def _publish(self, listed: list[Instance]) -> None:
        by_uid: dict[str, list[Instance]] = defaultdict(list)
        for instance in listed:
            owner = label_owner(instance.label, self._node)
            if owner is not None:
                by_uid[owner.uid].append(instance)
        now = trio.current_time()
        self._spent = self.spent()
        self._rate = sum(i.dph_total for found in by_uid.values() for i in found)
        self._rate_since = now
        for uid in set(by_uid) | {u for u, s in self._slots.items() if s.instances}:
            current = tuple(sorted(by_uid.get(uid, ()), key=lambda i: i.id))
            slot = self._slots[uid]
            if current != slot.instances:
                slot.instances = current
                slot.version += 1
                changed, slot.changed = slot.changed, trio.Event()
                changed.set()

    def forget(self, uid: str) -> None:
        """Drop ``uid``'s slot once its pod is gone and its instances are destroyed."""
        slot = self._slots.get(uid)
        if slot is not None and not slot.instances:
            del self._slots[uid]
