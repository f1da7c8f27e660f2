"""The pod's newest state, published to any number of watchers without ever waiting on one.

The runner changes the state from many tasks (a process exits, a probe flips ``ready``); each
watcher (a ``Watch`` connection) must see every *settled* state soon, but a slow watcher must
never hold the runner up, and a watcher that fell behind needs only the newest state, not the
ones in between. So the board keeps one value and a version number, and an event that is set
and replaced on each change: publishing never blocks, and a watcher that wakes late reads the
newest value.
"""

from __future__ import annotations

import trio

from vk_trio.agent.protocol import PodState

__all__ = ["StateBoard"]


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
