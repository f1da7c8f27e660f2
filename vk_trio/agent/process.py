"""One run of a container's process: started, its output kept, stopped, and its exit read.

The process gets a session (and so a process group) of its own, so that stopping it reaches
everything it started, as stopping a container does: SIGTERM to the group, SIGKILL after
the grace period, and SIGKILL to whatever of the group outlived its leader. Its stdout and
stderr go to the container's log files and to any attached client (``attach.py``), stdin is
/dev/null (the kubelet's default) or, when the spec asks for it, a pipe attached clients
write to.

The exit is read as the kubelet shows it: the exit code, ``Completed`` for 0 and ``Error``
otherwise, and for a process killed by a signal exit code 128 + signal (137 for SIGKILL),
``OOMKilled`` when the container's cgroup counted a new OOM kill meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal

import trio

from vk_trio.agent.children import Children
from vk_trio.agent.launch import Launch
from vk_trio.agent.logfiles import ContainerLogs
from vk_trio.agent.protocol import Terminated
from vk_trio.agent.tracker import rfc3339_now

if TYPE_CHECKING:
    from vk_trio.agent.attach import RunStdio

__all__ = ["MINIMUM_GRACE", "Run", "exit_code", "kill_group", "run_process", "spawn"]

_OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
MINIMUM_GRACE = 2.0
"""The kubelet's ``minimumGracePeriodInSeconds``: what is left of the grace period after a
``preStop`` hook is never less (unless the grace period itself was shorter)."""
_DRAIN = 2.0
"""How long the output is still read after the process exited (a grandchild that escaped
the group may hold the pipe open)."""


async def oom_kills() -> int | None:
    """The container cgroup's OOM-kill count (cgroup v2 or v1); None when it cannot tell."""
    for name in _OOM_FILES:
        try:
            text = await trio.Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def kill_group(pid: int, signum: int) -> None:
    """Signal the process group ``pid`` leads; gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def spawn(
    argv: Sequence[str],
    executable: str,
    launch: Launch,
    children: Children,
    *,
    stdin: int = subprocess.DEVNULL,
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
    preexec_fn: Callable[[], object] | None = None,
) -> trio.Process:
    """Start a process in its own session, registered with ``children`` before the reaper
    can see it exit. ``preexec_fn`` runs in the child after ``setsid`` and the change of
    user (exec's terminal: ``TIOCSCTTY``). Raises ``OSError``."""
    with children.spawning():
        process = await trio.lowlevel.open_process(
            list(argv),
            executable=executable,
            env=launch.env,
            cwd=launch.cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            user=launch.uid,
            group=launch.gid,
            extra_groups=launch.groups,
            preexec_fn=preexec_fn,
        )
        children.add(process.pid)
    return process


class Run:
    """A running process that others may stop (a restart, a failed probe, the agent's end)."""

    def __init__(self, process: trio.Process, nursery: trio.Nursery) -> None:
        self.process = process
        self.started_at = rfc3339_now()
        self.started = trio.current_time()
        self.message = ""
        self._nursery = nursery
        self._stopping = False
        self.before_stop: Callable[[], Awaitable[None]] | None = None
        """The container's ``preStop`` hook, run before SIGTERM within the grace period."""

    def stop(self, grace: float, message: str = "") -> None:
        """SIGTERM now (after the ``preStop`` hook, if any), SIGKILL after ``grace``
        seconds; the first stop's message is kept."""
        if self._stopping:
            return
        self._stopping, self.message = True, message
        self._nursery.start_soon(self._stop, grace)

    async def _stop(self, grace: float) -> None:
        """The kubelet's ``killContainer``: the hook's time comes out of the grace period,
        which the hook cannot outlast."""
        if self.before_stop is not None:
            began = trio.current_time()
            with trio.move_on_after(grace):
                await self.before_stop()
            grace = max(grace - (trio.current_time() - began), min(grace, MINIMUM_GRACE))
        kill_group(self.process.pid, signal.SIGTERM)
        await trio.sleep(grace)
        kill_group(self.process.pid, signal.SIGKILL)


def exit_code(returncode: int) -> int:
    """A process's exit code as the kubelet reports it: 128 + signal for a killed one."""
    return 128 - returncode if returncode < 0 else returncode


async def _pump(
    stream: trio.abc.ReceiveStream | None,
    name: Literal["stdout", "stderr"],
    logs: ContainerLogs,
    stdio: RunStdio | None,
) -> None:
    if stream is None:
        return
    async with stream:
        while data := await stream.receive_some(65536):
            await logs.write(name, bytes(data))
            if stdio is not None:
                stdio.publish(name, bytes(data))  # never waits: a slow client loses output


def _terminated(run: Run, code: int, oom: bool) -> Terminated:
    if code < 0:
        signum = -code
        oom_killed = oom and signum == signal.SIGKILL
        return Terminated(
            exit_code=128 + signum,
            reason="OOMKilled" if oom_killed else "Error",
            started_at=run.started_at,
            finished_at=rfc3339_now(),
            message=run.message,
            signal=signum,
        )
    return Terminated(
        exit_code=code,
        reason="Completed" if code == 0 else "Error",
        started_at=run.started_at,
        finished_at=rfc3339_now(),
        message=run.message,
    )


async def run_process(
    process: trio.Process,
    children: Children,
    logs: ContainerLogs,
    during: Callable[[Run], Awaitable[None]],
    stdio: RunStdio | None = None,
) -> tuple[Terminated, float]:
    """Watch a :func:`spawn`-ed process to its end, running ``during(run)`` meanwhile (its
    probes), its output to ``logs`` and to ``stdio``'s attached clients; returns how it
    ended and how long it ran. Cancelled, it kills the group."""
    oom_before = await oom_kills()
    try:
        async with trio.open_nursery() as pumps:
            pumps.start_soon(_pump, process.stdout, "stdout", logs, stdio)
            pumps.start_soon(_pump, process.stderr, "stderr", logs, stdio)
            async with trio.open_nursery() as control:
                run = Run(process, control)
                control.start_soon(during, run)
                code = await process.wait()
                control.cancel_scope.cancel()
            kill_group(process.pid, signal.SIGKILL)
            pumps.cancel_scope.deadline = trio.current_time() + _DRAIN
    finally:
        with trio.CancelScope(shield=True):
            kill_group(process.pid, signal.SIGKILL)
            await process.wait()
            children.discard(process.pid)
    oom_after = await oom_kills() if code < 0 else None
    oom = oom_before is not None and oom_after is not None and oom_after > oom_before
    return _terminated(run, code, oom), trio.current_time() - run.started
