"""The pod's newest state, published to any number of watchers without ever waiting on one.

The runner changes the state from many tasks (a process exits, a probe flips ``ready``); each
watcher (a ``Watch`` connection) must see every *settled* state soon, but a slow watcher must
never hold the runner up, and a watcher that fell behind needs only the newest state, not the
ones in between. So the board keeps one value and a version number, and an event that is set
and replaced on each change: publishing never blocks, and a watcher that wakes late reads the
newest value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import trio

from vk_trio.agent.protocol import EVENTS_KEPT, PodEvent, PodState

__all__ = ["PodEvents", "StateBoard"]


class PodEvents:
    """The pod's recent events, numbered, for the node to record as Kubernetes Events.

    The agent cannot post Events itself (it has no credentials for the cluster, by design),
    so each report carries the last :data:`EVENTS_KEPT` and the node records those it has
    not seen. ``on_change`` publishes a new state with each one."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._seq = 0
        self.recent: list[PodEvent] = []

    def record(
        self,
        container: str,
        init: bool,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        self._seq += 1
        event = PodEvent(
            seq=self._seq, container=container, init=init, type=kind, reason=reason,
            message=message,
        )  # fmt: skip
        self.recent = [*self.recent[-(EVENTS_KEPT - 1) :], event]
        self._on_change()


class StateBoard:
    """The newest :class:`PodState` and its version; ``publish`` never blocks."""

    def __init__(self, initial: PodState) -> None:
        self._state = initial
        self._version = 0
        self._changed = trio.Event()

    def publish(self, state: PodState) -> None:
        if state == self._state:
            return
        self._state = state
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    def current(self) -> tuple[PodState, int]:
        return self._state, self._version

    async def wait_newer(self, version: int) -> None:
        """Return once the state is newer than ``version``."""
        while self._version <= version:
            await self._changed.wait()
