"""``kubectl exec``: a command run in a running container's world, its stdio on the link.

The command gets exactly what the container's process got (``launch.prepare`` on the
container's spec with the command as ``argv``): its environment, directory and user, and a
session of its own, so that ending the exec reaches whatever it started.

- Without ``tty`` it gets pipes for the streams asked for (/dev/null for the others).
- With ``tty`` it gets a fresh pseudo-terminal as stdin, stdout and stderr and as its
  controlling terminal (``setsid`` then ``TIOCSCTTY`` in the child: a ``preexec_fn`` that is
  one C call, ``fcntl.ioctl``, so safe enough after a fork in the threaded agent; the
  terminal is owned by the container's user), ``TERM=xterm`` unless
  the container sets one (as Docker does); what the terminal shows is all ``stdout``, as the
  kubelet sends it; ``Resize`` sets its size (the kernel sends ``SIGWINCH``); ``InputEnd``
  types EOT (^D).

Output goes to the link as it comes, in pieces of at most :data:`CHUNK` bytes, and the
process is read only as fast as the link takes it: a node that does not read stalls the
process's writes, never the agent's memory (:attr:`ExecSession.pending` is what was read
and not yet sent: one piece per stream at most).

When the process exits its output is drained and ``Exit`` follows. :data:`DRAIN` bounds
how long a pipe may stay quiet after the exit (a background child may hold it open), not
the sending: what was in a pipe at the exit reaches the node however slowly the node takes
it (a bound on the whole drain once cut a busy node's last pipeful off, exit code 0), and
only :data:`DRAIN_MAX` after the exit does a child that keeps writing lose the rest. What
it started in the background runs on, as after ``docker exec``. When the node hangs up
first, the process's group gets SIGTERM and, :data:`HANGUP_GRACE` seconds later, SIGKILL,
and the process is reaped.

Input has back-pressure too: a frame of input is written to the process before the next is
read. So a hang-up is noticed when the next frame is read or the next output is sent; a
process that neither reads its stdin nor writes anything while the node hangs up is only
stopped when it next writes (or ends by itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import math
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Callable
from functools import partial
from typing import Literal

import msgspec
import trio

from vk_trio.agent.children import Children
from vk_trio.agent.container import Container
from vk_trio.agent.launch import Launch, LaunchError, prepare
from vk_trio.agent.link import FrameStream, LinkClosed
from vk_trio.agent.process import exit_code, kill_group, spawn
from vk_trio.agent.protocol import (
    Accepted,
    Exec,
    Exit,
    Failed,
    Input,
    InputEnd,
    Output,
    Resize,
    StreamFrame,
)

__all__ = ["CHUNK", "DRAIN", "DRAIN_MAX", "HANGUP_GRACE", "ExecSession", "refusal", "serve_exec"]

CHUNK = 32 * 1024
DRAIN = 2.0
DRAIN_MAX = 60.0
HANGUP_GRACE = 2.0
_LINK_ERRORS = (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError)
_EOT = b"\x04"


def refusal(container: Container | None, name: str) -> Failed | None:
    """Why exec or attach cannot join ``name``, in the kubelet's words; None: it can."""
    message = f'container not found ("{name}")'
    if container is None:
        return Failed(reason="NotFound", message=message)
    if not container.running:
        return Failed(reason="NotRunning", message=message)
    return None


def _cannot_run(message: str) -> Exit:
    """A command that cannot start, with a shell's code: 127 not found, 126 not runnable."""
    missing = "not found" in message or "no such file" in message
    return Exit(code=127 if missing else 126, message=message)


def _set_size(fd: int, width: int | None, height: int | None) -> None:
    if width and height:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


@dataclasses.dataclass
class _Stdio:
    """The process's ends on the agent's side."""

    stdin: trio.abc.SendStream | None
    outputs: list[tuple[trio.abc.ReceiveStream, Literal["stdout", "stderr"]]]
    terminal: int | None = None
    """The terminal's master fd (owned by the one stream over it), for ``Resize``."""


async def _start(
    request: Exec, launch: Launch, executable: str, children: Children
) -> tuple[trio.Process, _Stdio]:
    """Spawn the command on pipes or on a new terminal. Raises ``OSError``."""
    if not request.tty:
        process = await spawn(
            request.command,
            executable,
            launch,
            children,
            stdin=subprocess.PIPE if request.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if request.stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE if request.stderr else subprocess.DEVNULL,
        )
        outputs: list[tuple[trio.abc.ReceiveStream, Literal["stdout", "stderr"]]] = []
        if process.stdout is not None:
            outputs.append((process.stdout, "stdout"))
        if process.stderr is not None:
            outputs.append((process.stderr, "stderr"))
        return process, _Stdio(process.stdin, outputs)
    master, slave = os.openpty()
    try:
        _set_size(master, request.width, request.height)
        if launch.uid is not None:
            os.fchown(slave, launch.uid, -1)  # the user's own terminal, as a login gets it
        env = {"TERM": "xterm", **launch.env}
        ctty: Callable[[], object] = partial(fcntl.ioctl, 0, termios.TIOCSCTTY, 0)
        process = await spawn(
            request.command,
            executable,
            dataclasses.replace(launch, env=env),
            children,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=ctty,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # the child's copy is the only one: its end reads as EIO on ours
    terminal = trio.lowlevel.FdStream(master)
    return process, _Stdio(terminal, [(terminal, "stdout")], master)


class ExecSession:
    """One exec'd process and the link connection that drives it."""

    def __init__(
        self, frames: FrameStream, process: trio.Process, stdio: _Stdio, children: Children
    ) -> None:
        self.frames = frames
        self.process = process
        self.pending = 0
        """Bytes read from the process and not yet taken by the link."""
        self.peak_pending = 0
        self.hung_up = trio.Event()
        self._stdio = stdio
        self._children = children
        self._exited_at = math.inf
        self._reading: set[trio.CancelScope] = set()
        """The reads waiting on a pipe, whose deadline the exit sets."""

    async def run(self) -> None:
        """Until the process exits (then ``Exit``) or the node hangs up (then it is killed)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._input)
                nursery.start_soon(self._stop_on_hangup)
                async with trio.open_nursery() as pumps:
                    for stream, name in self._stdio.outputs:
                        pumps.start_soon(self._pump, stream, name)
                    code = await self.process.wait()
                    self._exited_at = trio.current_time()
                    for read in self._reading:
                        read.deadline = self._exited_at + DRAIN
                if not self.hung_up.is_set():
                    await self._send(Exit(code=exit_code(code)))
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    async def send_accepted(self) -> None:
        """The first answer; a node gone already is a hang-up (the process is stopped)."""
        await self._send(Accepted())

    async def _close(self) -> None:
        if self.process.returncode is None:
            kill_group(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self._children.discard(self.process.pid)
        for stream, _name in self._stdio.outputs:
            await trio.aclose_forcefully(stream)
        if self._stdio.stdin is not None:
            await trio.aclose_forcefully(self._stdio.stdin)

    async def _send(self, frame: StreamFrame) -> None:
        try:
            await self.frames.send(frame)
        except _LINK_ERRORS:
            self.hung_up.set()

    async def _pump(
        self, stream: trio.abc.ReceiveStream, name: Literal["stdout", "stderr"]
    ) -> None:
        while True:
            try:
                data = await self._read(stream)
            except trio.BrokenResourceError:
                return  # a terminal whose other end is closed reads EIO: its end of output
            if not data:
                return
            if self.hung_up.is_set():
                continue  # nobody listens: keep reading so that the process is not stuck
            self.pending += len(data)
            self.peak_pending = max(self.peak_pending, self.pending)
            try:
                await self._send(Output(stream=name, data=bytes(data)))
            finally:
                self.pending -= len(data)

    async def _read(self, stream: trio.abc.ReceiveStream) -> bytes:
        """The next piece of output; ``b""`` at its end, or, after the exit, once the pipe
        was quiet for ``DRAIN`` (or ``DRAIN_MAX`` passed): a cancelled read takes nothing
        from the pipe. The time a send waited for the node does not count."""
        now = trio.current_time()
        deadline = (
            min(now + DRAIN, self._exited_at + DRAIN_MAX) if self._exited_at < now else math.inf
        )
        with trio.CancelScope(deadline=deadline) as read:
            self._reading.add(read)
            try:
                return bytes(await stream.receive_some(CHUNK))
            finally:
                self._reading.discard(read)
        return b""

    async def _input(self) -> None:
        try:
            while (frame := await self.frames.receive_stream()) is not None:
                await self._apply(frame)
        except _LINK_ERRORS:
            pass
        self.hung_up.set()

    async def _apply(self, frame: StreamFrame) -> None:
        stdin, terminal = self._stdio.stdin, self._stdio.terminal
        match frame:
            case Input(data=data) if stdin is not None:
                # a process that closed its stdin does not read the rest
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stdin.send_all(data)
            case InputEnd() if terminal is not None:
                await self._apply(Input(data=_EOT))
            case InputEnd() if stdin is not None:
                self._stdio.stdin = None
                await trio.aclose_forcefully(stdin)
            case Resize(width=width, height=height) if terminal is not None:
                try:
                    _set_size(terminal, width, height)
                except OSError as error:
                    if error.errno != errno.EBADF:
                        raise

    async def _stop_on_hangup(self) -> None:
        await self.hung_up.wait()
        kill_group(self.process.pid, signal.SIGTERM)
        await trio.sleep(HANGUP_GRACE)
        kill_group(self.process.pid, signal.SIGKILL)


async def serve_exec(
    frames: FrameStream,
    container: Container | None,
    children: Children,
    request: Exec,
    sessions: set[ExecSession],
) -> None:
    """One exec on its link connection; ``sessions`` holds it while it runs (tests look)."""
    failed = refusal(container, request.container)
    if failed is not None:
        await frames.send(failed)
        return
    assert container is not None
    if not request.command:
        await frames.send(Failed(reason="BadRequest", message="no command specified"))
        return
    try:
        spec = msgspec.structs.replace(container.spec, argv=request.command)
        launch, executable = await prepare(spec)
        process, stdio = await _start(request, launch, executable, children)
    except LaunchError as error:
        await frames.send(Accepted())
        await frames.send(_cannot_run(str(error)))
        return
    except OSError as error:
        await frames.send(Accepted())
        reason = (error.strerror or str(error)).lower()
        await frames.send(_cannot_run(f'exec: "{request.command[0]}": {reason}'))
        return
    session = ExecSession(frames, process, stdio, children)
    sessions.add(session)
    try:
        await session.send_accepted()
        await session.run()
    finally:
        sessions.discard(session)
