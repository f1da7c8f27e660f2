"""The node's one writer of pod statuses, like the kubelet's status manager.

A supervisor never waits for the API server to show what it decided: ``PodReporter.show``
hands the pod's newest status over and carries on, and one of ``WORKERS`` tasks writes it.
While a pod's write waits its turn, a newer status of that pod takes its place, so a pod
that goes SearchingOffers → Buying → Provisioning in one busy second is written once, with
the newest; a thousand pods starting at once cost a patch or two fewer each, and none of
them waits on another's patches before buying.

One pod's writes never overlap, so they reach the server in the order they were decided.
Writes are lost when the process stops, as the kubelet's are: what a status says is
observed again by the next process.

The queue is bounded by the node's pods, by construction: it is the dict of pending writes,
one entry per pod (a newer status replaces the queued one in place, keeping its turn), and
idle workers park until ``submit`` wakes one. No channel (an unbounded one hid that bound;
a bounded one would need a size picked apart from the pods the node really has).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from loguru import logger

__all__ = ["WORKERS", "StatusWriter"]

WORKERS = 4
"""Status patches in flight at once: half the Kubernetes client's requests, so buys and
Events are not queued behind a burst of statuses."""

Write = Callable[[], Awaitable[None]]


class StatusWriter:
    """Writes each pod's newest status, one write per pod at a time; ``run`` owns the workers."""

    def __init__(self, *, workers: int = WORKERS) -> None:
        self._workers = workers
        self._due: dict[str, Write] = {}
        """The queue: pods whose newest status is not written yet (uid → how to write it),
        oldest first; at most one entry per pod."""
        self._writing: set[str] = set()
        """Pods being written: at most ``workers``, skipped in ``_due`` until done."""
        self._idle = trio.lowlevel.ParkingLot()

    def submit(self, uid: str, write: Write) -> None:
        """Have ``write`` run soon, replacing a write of ``uid`` that has not started."""
        self._due[uid] = write
        if uid not in self._writing:
            self._idle.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write statuses until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._work)
            task_status.started()

    def _next(self) -> str | None:
        """The oldest pending pod not being written (skips at most ``workers`` entries)."""
        return next((uid for uid in self._due if uid not in self._writing), None)

    async def _work(self) -> None:
        while True:
            uid = self._next()
            if uid is None:
                await self._idle.park()
                continue
            write = self._due.pop(uid)
            self._writing.add(uid)
            try:
                await write()
            except Exception as exc:  # one pod's bug must never stop every pod's statuses
                logger.opt(exception=exc).error("pod status write failed", uid=uid)
            finally:
                self._writing.discard(uid)
                if uid in self._due:  # a newer status came while this one was written
                    self._idle.unpark()
