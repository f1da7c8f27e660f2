"""The agent's own child processes, and the reaping of everyone else's as PID 1.

In a container the agent is PID 1, so every orphan in the container (a daemon a shell
script left behind, a probe's grandchild) becomes its child, and nobody but PID 1 can reap
their zombies: without a reaper they fill the process table. But a plain ``waitpid(-1)``
would also reap the processes trio is waiting for, whose exit status would then be lost
(trio would see "no such child" and report 0). So the reaper reaps only a zombie that

- is not one of the agent's own processes (:class:`Children`: the containers' processes and
  the probes, registered as they are spawned), and
- was a zombie already one round (a second) before: trio reaps the children it waits for
  within milliseconds of their exit, so this also spares children that others in the agent
  start through trio (``usage.py``'s nvidia-smi) without registering them.

The zombies are listed from /proc (state ``Z``, parent the agent); without /proc the reaper
peeks with ``waitid(P_ALL, WNOWAIT)``, which shows one zombie without reaping it.
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
        self._seen: set[int] = set()

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
        """Reap the orphaned zombies that were zombies last round too; return how many."""
        if self._spawning:
            return 0
        zombies = _zombie_children()
        if zombies is None:
            zombies = _peek_zombie()
        reaped = set()
        for pid in (zombies & self._seen) - self._pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped.add(pid)
        self._seen = zombies - reaped
        return len(reaped)


def _zombie_children() -> set[int] | None:
    """The agent's children that are zombies now, from /proc; None without /proc."""
    me = os.getpid()
    try:
        entries = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    zombies = set()
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            zombies.add(int(name))
    return zombies


def _peek_zombie() -> set[int]:
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return set()
    return set() if info is None else {info.si_pid}


async def reap_orphans(children: Children, interval: float = 1.0) -> None:
    """Reap orphans for ever, when the agent is PID 1 (otherwise there are none to reap)."""
    if os.getpid() != 1:
        return
    while True:
        children.reap_once()
        await trio.sleep(interval)
