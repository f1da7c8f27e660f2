"""One poller per node: instance-list sweeps shared by every pod task.

Polling Vast per pod made the last attempts hit rate limits (dstack #4031) and would make Vast
calls grow with pods. Here the number of calls per tick is the number of list pages (25
instances each), whatever the number of pods: one ``GET /api/v1/instances/`` sweep, filtered
to this node's labels, is split by pod UID and each pod task wakes only when *its* instances
changed.

Labels carry identity (``labels.py``): every instance is traceable to exactly one pod UID.

Two sweeps, two tasks, one snapshot:

- the **full** sweep lists every instance, every ``poll_slow`` seconds, or at once when a
  caller needs ``fresh()`` (before buying, to verify a destroy). With 1,000 steady instances
  that is 40 pages per slow tick, and nothing more;
- the **booting** sweep runs every ``poll_fast`` seconds *only while something boots* (or a
  just-bought instance has not been seen yet): one list filtered on the booting statuses
  (``select_filters={"actual_status": {"in": [null, "created", ...]}}``, vast-api.md §5.2),
  usually one page, plus one filtered on ``id`` for the instances that left that list (now
  running, exited or destroyed) or were just bought. So a booting pod turns Running within a
  fast tick of its instance even when a full sweep of 5,000 instances takes minutes at Vast's
  list limit: both share the pacer's list lane, first come first served.

The two can overlap, so each instance remembers which sweep (numbered when it started) last
wrote it, and a sweep never overwrites what a later-started one saw. A failed sweep keeps the
last good snapshot and is retried on the next tick; ``last_success`` tells the readiness probe
whether Vast answers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from loguru import logger

from vk_trio.errors import TemporaryError, VkError
from vk_trio.provider.cost import CostBook
from vk_trio.provider.labels import LabelOwner, label_owner
from vk_trio.vast import Instance, VastClient

BOOTING = (None, "created", "loading", "scheduling", "rebooting")
BOOTING_FILTER = {"actual_status": {"in": list(BOOTING)}}
"""The booting sweep's ``select_filters`` (``in`` with null, as ``--status`` sends it)."""
UNREAD = frozenset({"image_uuid", "image_args", "image_runtype", "extra_env", "onstart"})
"""Columns the sweeps leave out (``select_cols``): nothing reads them, and kept for thousands of
instances they cost kilobytes per pod; ``extra_env`` would also hold the pod's secrets."""
COLUMNS = [name for name in Instance.__struct_fields__ if name not in UNREAD]


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
        self._by_id: dict[int, Instance] = {}
        self._written_by: dict[int, int] = {}
        """Instance id → number of the sweep that last wrote (or removed) it."""
        self._expected: dict[int, int] = {}
        """Just-bought instance id → the full sweep after which it is no longer looked for."""
        self._full_ok_from = -math.inf
        """When the last successful full sweep started: it looked for every instance."""
        self._looked_from: dict[int, float] = {}
        """Instance id → when the last successful booting sweep that looked for it started."""
        self._numbered = 0
        """Sweeps of either kind started so far: the order in which their views were taken."""
        self._started = 0
        self._completed = 0
        self._last_ok = 0
        """Number of the last full sweep that succeeded (full sweeps are numbered from 1)."""
        self._swept = trio.Event()
        self._wake_full = trio.Event()
        self._wake_fast = trio.Event()
        self.booting_sweeps = 0
        self.last_success: float | None = None
        """``trio.current_time()`` of the last sweep that succeeded, None before the first."""
        self.last_failure: VkError | None = None
        """Why the last sweep failed; None after a success."""
        self.failures_in_a_row = 0
        self._rate = 0.0
        self._rate_since = trio.current_time()
        self._spent = 0.0
        self.costs = CostBook(node)
        """What each pod's instances have cost, metered at every sweep (``cost``)."""

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
        return list(self._by_id.values())

    def spend_per_hour(self) -> float:
        """USD per hour this node's instances bill, as of the last sweep (``Instance.billing``:
        a booting or stopped one, an outbid interruptible, bills its storage only)."""
        return self._rate

    def spent(self) -> float:
        """USD this node's instances have cost since this process started (as swept: each
        sweep's billing rate, held until the next sweep)."""
        return self._spent + self._rate * (trio.current_time() - self._rate_since) / 3600

    def all_uids(self) -> set[str]:
        """Every pod UID that has at least one instance in the last sweep."""
        return {uid for uid, slot in self._slots.items() if slot.instances}

    @property
    def sweeps(self) -> int:
        """Full sweeps completed so far (each costs one list call per page of instances)."""
        return self._completed

    async def rounds(
        self, interval: float, synced: Callable[[], bool]
    ) -> AsyncGenerator[None, None]:
        """Every ``interval`` seconds, once ``synced()`` holds and a full sweep completed since
        the last round: the pace of the two-strike cleaners (reaper, namespace tidy), so that
        each strike is judged on a sweep the previous one did not see."""
        seen = self.sweeps
        while True:
            await trio.sleep(interval)
            if synced() and self.sweeps != seen:
                seen = self.sweeps
                yield

    def stats(self) -> dict[str, Any]:
        """For ``/debug/vars``: sweeps made and what the snapshot holds."""
        return {
            "full_sweeps": self._completed,
            "booting_sweeps": self.booting_sweeps,
            "instances": len(self._by_id),
            "booting": len(self._booting()),
        }

    def version(self, uid: str) -> int:
        return self._slots[uid].version

    async def wait_changed(self, uid: str, since: int) -> tuple[Instance, ...]:
        """Wait until ``uid``'s instances differ from what version ``since`` saw."""
        slot = self._slots[uid]
        while slot.version == since:
            await slot.changed.wait()
        return slot.instances

    async def fresh(self) -> None:
        """Return once a full sweep that *started after this call* has succeeded.

        Used before buying (an instance a previous process bought must be seen first) and to
        find and verify what a deletion must destroy: one sweep serves every waiting pod, so
        these checks cost list pages, not calls per pod. Asking wakes the full sweep at once.
        Raises ``TemporaryError`` when that sweep failed: nothing can be known, so nothing
        may be bought or declared gone.
        """
        target = self._started + 1
        self._wake_full.set()
        while self._completed < target:
            await self._swept.wait()
        if self._last_ok < target:
            raise TemporaryError(f"cannot list Vast instances: {self.last_failure}")

    def looked_for(self, instance_id: int, *, since: float) -> bool:
        """Whether a sweep that started at ``since`` or later looked for ``instance_id``
        and succeeded: only then does "not listed" mean anything. With thousands of
        instances a full sweep takes minutes at Vast's list limit, so a clock alone would
        call every instance bought meanwhile lost."""
        return max(self._full_ok_from, self._looked_from.get(instance_id, -math.inf)) >= since

    def hurry(self, instance_ids: Iterable[int] = ()) -> None:
        """Look at ``instance_ids`` (just bought or destroyed) in the next booting sweep.

        The booting sweep runs within ``poll_fast``; a steady node starts it now. An id not
        listed yet is looked for until a full sweep that starts after this call.
        """
        for instance_id in instance_ids:
            self._expected[instance_id] = self._started + 1
        self._wake_fast.set()

    def forget(self, uid: str) -> None:
        """Drop ``uid``'s slot once its pod is gone and its instances are destroyed."""
        slot = self._slots.get(uid)
        if slot is not None and not slot.instances:
            del self._slots[uid]

    # -- the loops ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep forever. Owns its two loops; never raises on Vast errors.

        ``task_status.started()`` fires after the first full sweep (successful or not), so the
        caller knows a first picture of the world exists before pods are handled.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._full_loop)
            nursery.start_soon(self._booting_loop)
            task_status.started()

    async def _full_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        first = True
        while True:
            self._wake_full = trio.Event()
            next_at = trio.current_time() + self._slow  # a tick, however long the sweep took
            await self._sweep_full()
            if first:
                task_status.started()
                first = False
            with trio.move_on_at(next_at):
                await self._wake_full.wait()

    async def _booting_loop(self) -> None:
        while True:
            self._wake_fast = trio.Event()
            if self._booting() or self._expected:
                await self._sweep_booting()
                await trio.sleep(self._fast)  # at most one booting sweep per fast tick
            else:
                await self._wake_fast.wait()

    def _booting(self) -> list[int]:
        return [i.id for i in self._by_id.values() if i.actual_status in BOOTING]

    async def _sweep_full(self) -> None:
        self._started += 1
        number = self._started
        self._numbered += 1
        order = self._numbered
        started = trio.current_time()
        try:
            listed = await self._vast.list_instances(select_cols=COLUMNS)
        except VkError as exc:
            self._failed(exc)
        else:
            self._succeeded()
            self._last_ok = number
            self._full_ok_from = started
            self._looked_from = {i: t for i, t in self._looked_from.items() if t > started}
            self._apply(self._ours(listed), order, complete=True)
            self._expected = {i: n for i, n in self._expected.items() if n > number}
            if self._booting():
                self._wake_fast.set()
        finally:
            self._completed += 1
            swept, self._swept = self._swept, trio.Event()
            swept.set()

    async def _sweep_booting(self) -> None:
        self._numbered += 1
        order = self._numbered
        self.booting_sweeps += 1
        looked_at = set(self._booting()) | set(self._expected)
        started = trio.current_time()
        try:
            seen = self._ours(
                await self._vast.list_instances(select_filters=BOOTING_FILTER, select_cols=COLUMNS)
            )
            left = sorted(looked_at - {i.id for i in seen})
            if left:  # running now, exited, destroyed, or bought but not booting any more
                more = await self._vast.list_instances(
                    select_filters={"id": {"in": left}}, select_cols=COLUMNS
                )
                seen += self._ours(more)
        except VkError as exc:
            self._failed(exc)
            return
        self._succeeded()
        for instance_id in looked_at:
            self._looked_from[instance_id] = started
        found = {i.id for i in seen}
        for instance_id in found:
            self._expected.pop(instance_id, None)
        gone = {i for i in looked_at - found if i in self._by_id}
        self._apply(seen, order, gone=gone)

    def _failed(self, exc: VkError) -> None:
        self.last_failure = exc
        self.failures_in_a_row += 1
        logger.warning("instance sweep failed; keeping the last snapshot", error=str(exc))

    def _succeeded(self) -> None:
        self.last_success = trio.current_time()
        self.last_failure = None
        self.failures_in_a_row = 0

    def _ours(self, listed: list[Instance]) -> list[Instance]:
        return [i for i in listed if label_owner(i.label, self._node) is not None]

    def _apply(
        self,
        listed: list[Instance],
        order: int,
        *,
        complete: bool = False,
        gone: Iterable[int] = (),
    ) -> None:
        """Merge what sweep number ``order`` saw: ``listed`` instances, ``gone`` ids (or, for
        a ``complete`` listing, every id it did not list). What a later-started sweep wrote
        already stays."""
        written = self._written_by
        updates = {i.id: i for i in listed if written.get(i.id, 0) < order}
        removed = set(gone)
        if complete:
            removed |= self._by_id.keys() - {i.id for i in listed}
        removed = {i for i in removed if written.get(i, 0) < order}
        touched = self._merge(updates, removed, order)
        now = trio.current_time()
        self._spent = self.spent()
        self._rate = sum(i.billing for i in self._by_id.values())
        self._rate_since = now
        self.costs.observe(self._by_id.values(), now)
        if complete:  # forget the marks of long-gone instances
            for instance_id in [i for i in written if i not in self._by_id and written[i] < order]:
                del written[instance_id]
        if touched:
            self._notify(touched)

    def _merge(self, updates: dict[int, Instance], removed: set[int], order: int) -> set[str]:
        """Write sweep ``order``'s updates and removals; return the pod UIDs they touched."""
        written = self._written_by
        touched: set[str] = set()
        for instance_id in removed:
            old = self._by_id.pop(instance_id, None)
            written[instance_id] = order
            if old is not None:
                touched.add(self._uid(old))
        for instance_id, instance in updates.items():
            old = self._by_id.get(instance_id)
            self._by_id[instance_id] = instance
            written[instance_id] = order
            if old != instance:
                touched.add(self._uid(instance))
                if old is not None:
                    touched.add(self._uid(old))
        return touched

    def _notify(self, touched: set[str]) -> None:
        """Wake the waiters of each touched pod whose instances really changed."""
        by_uid: dict[str, list[Instance]] = defaultdict(list)
        for instance in self._by_id.values():
            uid = self._uid(instance)
            if uid in touched:
                by_uid[uid].append(instance)
        for uid in touched:
            current = tuple(sorted(by_uid.get(uid, ()), key=lambda i: i.id))
            slot = self._slots[uid]
            if current != slot.instances:
                slot.instances = current
                slot.version += 1
                changed, slot.changed = slot.changed, trio.Event()
                changed.set()

    def _uid(self, instance: Instance) -> str:
        owner = label_owner(instance.label, self._node)
        return owner.uid if owner is not None else ""
