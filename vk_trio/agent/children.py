"""The agent's own child processes, and the reaping of everyone else's as PID 1.

In a container the agent is PID 1, so every orphan in the container (a daemon a shell
script left behind, a probe's grandchild) becomes its child, and nobody but PID 1 can reap
their zombies: without a reaper they fill the process table. But a plain ``waitpid(-1)``
would also reap the processes trio is waiting for, whose exit status would be lost (trio
would see "no such child" and report 0). So the reaper peeks first
(``waitid(P_ALL, WNOWAIT)`` shows a zombie without reaping it) and reaps only pids that are
not in :class:`Children`. A child exists before its pid is known (``open_process`` forks in
a worker thread), so while any spawn is in progress the reaper skips its round.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import trio

__all__ = ["Children", "reap_orphans"]


class Children:
    """The pids the agent waits for itself (its processes and probes)."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._spawning = 0

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around a spawn: the reaper keeps off until its pid is :meth:`add`-ed."""
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    def add(self, pid: int) -> None:
        self._pids.add(pid)

    def discard(self, pid: int) -> None:
        self._pids.discard(pid)

    def reap_once(self) -> int:
        """Reap the orphaned zombies there are now; return how many."""
        reaped = 0
        while not self._spawning:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return reaped
            if info is None or info.si_pid in self._pids:
                return reaped  # none, or one of ours: trio reaps it
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, os.WNOHANG)
            reaped += 1
        return reaped


async def reap_orphans(children: Children, interval: float = 1.0) -> None:
    """Reap orphans for ever, when the agent is PID 1 (otherwise there are none to reap)."""
    if os.getpid() != 1:
        return
    while True:
        children.reap_once()
        await trio.sleep(interval)
