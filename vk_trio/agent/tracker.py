"""One container's status as the kubelet shows it, kept as mutable fields the runner sets.

The kubelet's ``containerStatuses[]`` has a current state (waiting with a reason, running
since a time, terminated), the previous run (``lastState``), a restart count and the probes'
``ready``/``started``. The runner, the process and the probes each change a part of it; the
tracker holds those parts and renders the immutable :class:`ContainerState` the board
publishes, and calls ``on_change`` so the board is updated after every change.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Literal

from vk_trio.agent.protocol import ContainerState, Terminated

__all__ = ["ContainerTracker", "rfc3339_now"]


def rfc3339_now() -> str:
    """Now, as Kubernetes writes times: RFC 3339, UTC, whole seconds."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ContainerTracker:
    """The status of one container, as the runner and its probes change it."""

    def __init__(self, name: str, on_change: Callable[[], None]) -> None:
        self.name = name
        self._on_change = on_change
        self.state: Literal["waiting", "running", "terminated"] = "waiting"
        self.reason = "PodInitializing"
        self.message = ""
        self.started_at: str | None = None
        self.terminated: Terminated | None = None
        self.last_terminated: Terminated | None = None
        self.restart_count = 0
        self.ready: bool | None = None
        self.started: bool | None = None

    def waiting(self, reason: str, message: str = "") -> None:
        self.state, self.reason, self.message = "waiting", reason, message
        self.started_at = None
        self._on_change()

    def running(self, started_at: str, *, ready: bool | None, started: bool | None) -> None:
        self.state, self.reason, self.message = "running", "", ""
        self.started_at = started_at
        self.ready, self.started = ready, started
        self._on_change()

    def exited(self, terminated: Terminated, *, final: bool) -> None:
        """A run ended: the current state when no run follows, else the last state (and
        the container waits for its next run)."""
        self.ready = False if self.ready is not None else None
        self.started = False if self.started is not None else None
        if final:
            self.state, self.reason, self.message = "terminated", "", ""
            self.terminated = terminated
        else:
            self.state, self.reason, self.message = "waiting", "ContainerCreating", ""
            self.last_terminated = terminated
        self.started_at = None
        self._on_change()

    def probed(self, *, ready: bool | None = None, started: bool | None = None) -> None:
        """A probe's verdict changed (None leaves a field as it is)."""
        if ready is not None:
            self.ready = ready
        if started is not None:
            self.started = started
        self._on_change()

    def snapshot(self) -> ContainerState:
        return ContainerState(
            name=self.name,
            state=self.state,
            reason=self.reason,
            message=self.message,
            started_at=self.started_at,
            terminated=self.terminated,
            last_terminated=self.last_terminated,
            restart_count=self.restart_count,
            ready=self.ready,
            started=self.started,
        )
