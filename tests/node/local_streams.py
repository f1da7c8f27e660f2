"""The streaming verbs done on this machine, for the fake provider: ``exec`` runs the command
as a local process, ``port_forward`` connects to 127.0.0.1. Real processes and sockets, so
that the kubelet API's relays are tested against real back-pressure and real exits; only
a terminal is missing (``tty`` is recorded, and resizes are kept in ``resizes``).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from vk_trio.node.provider import NotReady, ProcessExit, ProcessOutput

__all__ = ["LocalProcess", "local_port", "local_process"]

_CHUNK = 32 * 1024


class LocalProcess:
    """A local process as the node's ``ProcessIO``."""

    def __init__(self, process: trio.Process, resizes: list[tuple[int, int]]) -> None:
        self._process = process
        self._resizes = resizes
        self._output: trio.MemoryReceiveChannel[ProcessOutput]
        self._send, self._output = trio.open_memory_channel[ProcessOutput](0)
        self.exit: ProcessExit | None = None

    async def pump(self) -> None:
        """Read stdout and stderr into ``receive`` until both end."""
        async with self._send, trio.open_nursery() as nursery:
            for name, pipe in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
                if pipe is not None:
                    nursery.start_soon(self._read, name, pipe, self._send.clone())

    async def _read(
        self,
        name: str,
        pipe: trio.abc.ReceiveStream,
        send: trio.MemorySendChannel[ProcessOutput],
    ) -> None:
        async with send:
            while data := await pipe.receive_some(_CHUNK):
                await send.send(ProcessOutput(name, data))  # type: ignore[arg-type]

    async def write(self, data: bytes) -> None:
        assert self._process.stdin is not None
        # A process that stopped reading: its input goes nowhere, as with a pipe.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._process.stdin.send_all(data)

    async def close_input(self) -> None:
        if self._process.stdin is not None:
            await self._process.stdin.aclose()

    async def resize(self, width: int, height: int) -> None:
        self._resizes.append((width, height))
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProcessOutput | ProcessExit:
        if self.exit is None:
            try:
                return await self._output.receive()
            except trio.EndOfChannel:
                code = await self._process.wait()
                self.exit = ProcessExit(code if code >= 0 else 128 - code)
        return self.exit


@asynccontextmanager
async def local_process(
    command: list[str], *, stdin: bool, resizes: list[tuple[int, int]]
) -> AsyncIterator[LocalProcess]:
    """``command`` running here; leaving kills it if it still runs."""
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    local = LocalProcess(process, resizes)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(local.pump)
            yield local
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


@asynccontextmanager
async def local_port(port: int) -> AsyncIterator[trio.abc.HalfCloseableStream]:
    """A connection to 127.0.0.1:``port``; ``NotReady`` when nothing listens there."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError as exc:
        raise NotReady(f"nothing listens on port {port}: {exc.strerror or exc}") from exc
    async with stream:
        yield stream
