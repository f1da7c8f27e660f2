"""``kubectl attach``: clients that join the main process's stdio while its run goes on.

The process's output already goes to its log files (``process.py``'s pumps); the same pumps
hand every piece to :meth:`RunStdio.publish`, which puts it in each attached client's own
queue without ever waiting, so that neither the process nor its logs slow down for a client.
A client's queue holds at most :data:`CLIENT_QUEUE` pieces (64 KiB each at most): a client
that falls further behind loses the pieces that do not fit, which are counted and logged
(the log files still have them: ``kubectl logs`` shows what an attached client missed).

Stdin: when the container's spec has ``stdin``, the process is started with a pipe for it,
and attached clients that asked for stdin write to that pipe in turns. With ``stdin_once``
the pipe closes when the first attached client closes its stdin (as the kubelet does), else
it stays open for the next client. A terminal for the main process (``tty``) is not
supported: ``Attach(tty=True)`` is served as a plain attach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import trio
from loguru import logger

from vk_trio.agent.link import FrameStream, LinkClosed
from vk_trio.agent.protocol import (
    Accepted,
    Attach,
    Exit,
    Failed,
    Input,
    InputEnd,
    Output,
    Terminated,
)

__all__ = ["CLIENT_QUEUE", "AttachClient", "RunStdio", "serve_attach"]

CLIENT_QUEUE = 16
"""Pieces of output one attached client may be behind before it loses some."""
OUTPUT_CHUNK = 32 * 1024

Piece = tuple[Literal["stdout", "stderr"], bytes]


@dataclass(eq=False)
class AttachClient:
    """One attached client's queue; ``dropped`` counts the bytes it lost by being slow."""

    streams: frozenset[str]
    send: trio.MemorySendChannel[Piece]
    receive: trio.MemoryReceiveChannel[Piece]
    dropped: int = 0
    queued_peak: int = 0
    """The most pieces it had waiting at once (never more than :data:`CLIENT_QUEUE`)."""


@dataclass(eq=False)
class RunStdio:
    """One run's stdio as attached clients see it: output fanned out, stdin shared."""

    stdin: trio.abc.SendStream | None
    stdin_once: bool = False
    clients: set[AttachClient] = field(default_factory=set)
    ended: trio.Event = field(default_factory=trio.Event)
    terminated: Terminated | None = None
    _writing: trio.Lock = field(default_factory=trio.Lock)

    def publish(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        """Queue ``data`` for every client that wants ``stream``; never waits."""
        for client in self.clients:
            if stream not in client.streams:
                continue
            try:
                client.send.send_nowait((stream, data))
            except trio.WouldBlock:
                if not client.dropped:
                    logger.warning("an attached client reads too slowly: it loses output")
                client.dropped += len(data)
            queued = client.receive.statistics().current_buffer_used
            client.queued_peak = max(client.queued_peak, queued)

    @contextlib.contextmanager
    def attach(self, streams: frozenset[str]) -> Iterator[AttachClient]:
        """A client's queue for as long as it is attached."""
        send, receive = trio.open_memory_channel[Piece](CLIENT_QUEUE)
        client = AttachClient(streams, send, receive)
        self.clients.add(client)
        try:
            yield client
        finally:
            self.clients.discard(client)
            send.close()
            if client.dropped:
                logger.info(f"an attached client left having lost {client.dropped} bytes")

    async def write(self, data: bytes) -> None:
        """Bytes for the process's stdin (one client's write at a time); a process that
        closed its stdin, or a spec without one, takes nothing."""
        async with self._writing:
            if self.stdin is None:
                return
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stdin.send_all(data)

    async def client_closed_stdin(self) -> None:
        """A client closed its stdin: with ``stdin_once`` the process's stdin closes."""
        if self.stdin_once:
            await self.close_stdin()

    async def close_stdin(self) -> None:
        async with self._writing:
            if self.stdin is not None:
                stdin, self.stdin = self.stdin, None
                await trio.aclose_forcefully(stdin)

    def end(self, terminated: Terminated | None) -> None:
        """The run is over: every client gets what is queued, then the run's exit."""
        self.terminated = terminated
        for client in self.clients:
            client.send.close()
        self.ended.set()


async def serve_attach(frames: FrameStream, stdio: RunStdio | None, request: Attach) -> None:
    """One attached client until the run ends (its ``Exit``) or the client leaves."""
    if stdio is None or stdio.ended.is_set():
        message = f'container not found ("{request.container}")'
        await frames.send(Failed(reason="NotRunning", message=message))
        return
    streams = frozenset(
        name for name, wanted in (("stdout", request.stdout), ("stderr", request.stderr)) if wanted
    )
    with stdio.attach(streams) as client:
        await frames.send(Accepted())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_input, frames, stdio, request.stdin, nursery.cancel_scope)
            try:
                await _output(frames, client)
                await stdio.ended.wait()
                await frames.send(_exit(stdio.terminated))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client left; the process runs on
            nursery.cancel_scope.cancel()


def _exit(terminated: Terminated | None) -> Exit:
    if terminated is None:  # the run was cancelled: the agent is stopping
        return Exit(code=137, message="the agent stopped the container")
    return Exit(code=terminated.exit_code, message=terminated.message)


async def _output(frames: FrameStream, client: AttachClient) -> None:
    async for stream, data in client.receive:
        for start in range(0, max(len(data), 1), OUTPUT_CHUNK):
            await frames.send(Output(stream=stream, data=data[start : start + OUTPUT_CHUNK]))


async def _input(
    frames: FrameStream, stdio: RunStdio, wants_stdin: bool, scope: trio.CancelScope
) -> None:
    """The client's frames; its leaving ends the attach (the process runs on)."""
    closed = False
    try:
        while (frame := await frames.receive_stream()) is not None:
            if isinstance(frame, Input) and wants_stdin and not closed:
                await stdio.write(frame.data)
            elif isinstance(frame, InputEnd) and wants_stdin and not closed:
                closed = True
                await stdio.client_closed_stdin()
    except (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    if wants_stdin and not closed:
        await stdio.client_closed_stdin()
    scope.cancel()
