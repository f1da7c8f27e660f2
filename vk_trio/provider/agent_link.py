"""The node's end of the link to a pod's agent: one TLS connection per request.

``AgentLink`` knows where the agent listens (the public endpoint Vast maps its port to) and
the pod's link keys (``vk_trio.agent.link``); each method opens a connection, sends one
request and reads its answers. What the agent reports is turned into the node's own types
here (``Processes``, ``Usage``), so that nothing above the provider knows the agent's wire.

Failures are ``AgentUnreachable`` (no connection, a refused handshake, a dropped link: a
temporary error, retried by the caller) or ``AgentRefused`` (the agent answered ``Failed``).
"""

from __future__ import annotations

import datetime as _dt
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import trio

from vk_trio.agent.link import FrameStream, LinkClosed, LinkKeys, client_context
from vk_trio.agent.protocol import (
    Accepted,
    Answer,
    Bundle,
    Chunk,
    ContainerState,
    End,
    Failed,
    GetUsage,
    Logs,
    PodState,
    Request,
    Restart,
    Start,
    Terminated,
    UpdateVolume,
    UsageReport,
    Volume,
    Watch,
)
from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.node.provider import LogOptions, Processes, ProcessState, Usage
from vk_trio.node.status import ContainerState as NodeState
from vk_trio.node.status import Running, Waiting
from vk_trio.node.status import Terminated as NodeTerminated

__all__ = ["AgentLink", "AgentRefused", "AgentUnreachable", "processes"]

CONNECT_TIMEOUT = 10.0
"""Seconds for the TCP connection and the TLS handshake together."""
WATCH_HEARTBEAT = 10.0
"""The agent sends its state at least this often; twice that silent is a dead link."""


class AgentUnreachable(TemporaryError):
    """The agent did not answer: not listening yet, the link dropped, or a refused handshake."""


class AgentRefused(PermanentError):
    """The agent answered the request with ``Failed``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AgentLink:
    """Requests to one pod's agent at ``host:port``."""

    def __init__(self, keys: LinkKeys, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._context = client_context(keys)

    @asynccontextmanager
    async def _connection(self, request: Request) -> AsyncIterator[FrameStream]:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                tcp = await trio.open_tcp_stream(self.host, self.port)
                tls = trio.SSLStream(tcp, self._context, server_hostname="vk-trio-agent")
                link = FrameStream(tls)
                await tls.do_handshake()
                await link.send(request)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise AgentUnreachable(
                f"the agent at {self.host}:{self.port} does not answer: {exc or type(exc).__name__}"
            ) from exc
        try:
            yield link
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await trio.aclose_forcefully(link.stream)

    async def _answers(self, link: FrameStream) -> AsyncGenerator[Answer, None]:
        while True:
            try:
                answer = await link.receive_answer()
            except (LinkClosed, trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                raise AgentUnreachable(f"the link to the agent broke: {exc}") from exc
            if answer is None:
                raise AgentUnreachable("the agent closed the link")
            if isinstance(answer, Failed):
                raise AgentRefused(answer.reason, answer.message)
            yield answer

    async def _one(self, request: Request) -> Answer:
        async with self._connection(request) as link:
            async for answer in self._answers(link):
                return answer
        raise AssertionError("unreachable")

    async def start(self, bundle: Bundle) -> bool:
        """Hand the agent the pod; False when it already runs it (a reconnect)."""
        answer = await self._one(Start(bundle=bundle))
        return isinstance(answer, Accepted) and answer.started

    async def update_volume(self, volume: Volume) -> None:
        await self._one(UpdateVolume(volume=volume))

    async def restart(self, message: str) -> None:
        await self._one(Restart(message=message))

    async def usage(self) -> Usage:
        answer = await self._one(GetUsage())
        if not isinstance(answer, UsageReport):
            raise AgentUnreachable(f"the agent answered {type(answer).__name__} to a usage query")
        return Usage(
            memory_bytes=answer.memory_bytes,
            disk_used_bytes=answer.disk_used_bytes,
            disk_capacity_bytes=answer.disk_capacity_bytes,
            gpu_utilisation=answer.gpu_utilisation,
            gpu_memory_bytes=answer.gpu_memory_bytes,
            gpu_memory_used_bytes=answer.gpu_memory_used_bytes,
            gpu_name=answer.gpu_name,
        )

    async def watch(self) -> AsyncGenerator[Processes, None]:
        """The pod's processes now and on every change, until the link breaks."""
        async with self._connection(Watch(heartbeat=WATCH_HEARTBEAT)) as link:
            answers = self._answers(link)
            while True:
                with trio.move_on_after(2 * WATCH_HEARTBEAT) as silent:
                    answer = await anext(answers)
                if silent.cancelled_caught:
                    raise AgentUnreachable("the agent's link went silent")
                if isinstance(answer, PodState):
                    yield processes(answer)

    async def logs(self, container: str, options: LogOptions) -> AsyncGenerator[bytes, None]:
        """The container's output under ``options``, from the agent's files."""
        request = Logs(
            container=container,
            previous=options.previous,
            follow=options.follow,
            tail_lines=options.tail_lines,
            limit_bytes=options.limit_bytes,
            since_time=_rfc3339(options.cutoff(_dt.datetime.now(_dt.UTC))),
            timestamps=options.timestamps,
        )
        async with self._connection(request) as link:
            async for answer in self._answers(link):
                if isinstance(answer, End):
                    return
                if isinstance(answer, Chunk):
                    yield answer.data


def _rfc3339(moment: _dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def processes(state: PodState) -> Processes:
    """The agent's ``PodState`` as the node's ``Processes``."""
    return Processes(
        tuple(_process(c) for c in state.init_containers),
        _process(state.container),
        state.initialized,
        state.finished,
        state.reason,
        state.message,
    )


def _process(container: ContainerState) -> ProcessState:
    return ProcessState(
        container.name,
        _state(container),
        _terminated(container.last_terminated) if container.last_terminated else None,
        container.restart_count,
        container.ready,
        container.started,
    )


def _state(container: ContainerState) -> NodeState:
    if container.state == "running":
        return Running(container.started_at or "")
    if container.state == "terminated" and container.terminated is not None:
        return _terminated(container.terminated)
    return Waiting(container.reason or "ContainerCreating", container.message)


def _terminated(terminated: Terminated) -> NodeTerminated:
    return NodeTerminated(
        terminated.exit_code,
        terminated.reason,
        terminated.message,
        terminated.started_at,
        terminated.finished_at,
    )
