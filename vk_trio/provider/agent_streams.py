"""``Provider.exec``, ``attach`` and ``port_forward`` for a pod under the agent: the agent
link's streams, with its errors turned into the node's.

The node sees only its own types: ``ProcessIO`` (which ``agent_link.ProcessStream`` already
is, but for its errors) and a trio ``HalfCloseableStream``. So this module's one job is the
failure mapping, once and for both directions:

- opening: the agent refused (no such container, not running, nothing listening on the
  port) → ``NotReady`` with the agent's message; no answer → ``ProviderUnavailable``;
- during the session: a dropped link → ``ProviderUnavailable`` from a process, and
  ``trio.BrokenResourceError`` from a forwarded port (what any broken trio stream raises,
  so that a relay treats it like a closed socket).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from vk_trio.node.provider import (
    AttachOptions,
    ContainerError,
    ExecOptions,
    NotFound,
    NotReady,
    ProcessExit,
    ProcessIO,
    ProcessOutput,
    ProviderUnavailable,
)
from vk_trio.provider.agent_link import (
    AgentLink,
    AgentRefused,
    AgentUnreachable,
    ForwardedPort,
    ProcessStream,
)

__all__ = ["AgentPort", "AgentProcess", "attach", "exec_in", "port_forward"]


def _refused(exc: AgentRefused) -> ContainerError:
    return NotFound(str(exc)) if exc.reason == "NotFound" else NotReady(str(exc))


@asynccontextmanager
async def _opened() -> AsyncIterator[None]:
    """Errors of opening a stream, as the node's."""
    try:
        yield
    except AgentRefused as exc:
        raise _refused(exc) from exc
    except AgentUnreachable as exc:
        raise ProviderUnavailable(str(exc)) from exc


class AgentProcess:
    """A ``ProcessStream`` as the node's ``ProcessIO``."""

    def __init__(self, stream: ProcessStream) -> None:
        self._stream = stream

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except AgentUnreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc

    async def close_input(self) -> None:
        try:
            await self._stream.close_input()
        except AgentUnreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc

    async def resize(self, width: int, height: int) -> None:
        try:
            await self._stream.resize(width, height)
        except AgentUnreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc

    async def receive(self) -> ProcessOutput | ProcessExit:
        try:
            return await self._stream.receive()
        except AgentUnreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc


class AgentPort(trio.abc.HalfCloseableStream):
    """A ``ForwardedPort`` whose broken link raises ``trio.BrokenResourceError``."""

    def __init__(self, port: ForwardedPort) -> None:
        self._port = port

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._port.send_all(data)
        except AgentUnreachable as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self._port.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        try:
            await self._port.send_eof()
        except AgentUnreachable as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._port.receive_some(max_bytes)
        except AgentUnreachable as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._port.aclose()


@asynccontextmanager
async def exec_in(
    link: AgentLink, container: str, options: ExecOptions
) -> AsyncIterator[ProcessIO]:
    async with (
        _opened(),
        link.exec(
            container,
            list(options.command),
            tty=options.tty,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
        ) as stream,
    ):
        yield AgentProcess(stream)


@asynccontextmanager
async def attach(
    link: AgentLink, container: str, options: AttachOptions
) -> AsyncIterator[ProcessIO]:
    async with (
        _opened(),
        link.attach(
            container,
            tty=options.tty,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
        ) as stream,
    ):
        yield AgentProcess(stream)


@asynccontextmanager
async def port_forward(link: AgentLink, port: int) -> AsyncIterator[trio.abc.HalfCloseableStream]:
    async with _opened(), link.port_forward(port) as forwarded:
        yield AgentPort(forwarded)
