"""The agent's end of the link: one TLS connection per request, each answered from the runner.

Every connection must complete the mutual TLS handshake (``link.server_context``: the node's
certificate, and only it) within :data:`HANDSHAKE_TIMEOUT`; anything else on the public port
(scanners, another pod's node key, a replayed handshake) is dropped, and logged at most once
a minute, without a traceback, since the line is the instance's Vast log. After the
handshake the client sends one request and reads the answers until the agent closes; after
``Exec``, ``Attach`` and ``PortForward`` both ends stream (``exec.py``, ``attach.py``,
``portforward.py``) until either closes.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from loguru import logger

from vk_trio.agent.attach import serve_attach
from vk_trio.agent.exec import ExecSession, serve_exec
from vk_trio.agent.link import FrameStream, LinkClosed, LinkKeys, server_context
from vk_trio.agent.portforward import serve_port_forward
from vk_trio.agent.protocol import (
    AGENT_PORT,
    Attach,
    Chunk,
    End,
    Exec,
    Failed,
    GetUsage,
    Logs,
    PortForward,
    Request,
    Restart,
    Start,
    Stop,
    UpdateVolume,
    UsageReport,
    Watch,
)
from vk_trio.agent.runner import NOT_STARTED, Runner

__all__ = ["HANDSHAKE_TIMEOUT", "LinkServer", "serve_link"]

HANDSHAKE_TIMEOUT = 10.0
REFUSAL_LOG_INTERVAL = 60.0


@dataclass
class LinkServer:
    """Serves the link for one runner; counts what it accepted and refused."""

    runner: Runner
    keys: LinkKeys
    usage: Callable[[], Awaitable[UsageReport]]
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    port: int = 0
    """Where it listens, once it does."""
    accepted: int = 0
    refused: int = 0
    exec_sessions: set[ExecSession] = field(default_factory=set)
    """The execs running now (their back-pressure is observable)."""
    _context: ssl.SSLContext | None = field(default=None, init=False)
    _last_refusal_log: float = field(default=-math.inf, init=False)
    _unlogged: int = field(default=0, init=False)

    async def handle(self, tcp: trio.SocketStream) -> None:
        """One connection: handshake, one request, its answers."""
        if self._context is None:
            self._context = server_context(self.keys)
        tls = trio.SSLStream(tcp, self._context, server_side=True)
        peer = _peer(tcp)
        try:
            with trio.fail_after(self.handshake_timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as error:
            self._refusal(peer, error)
            await trio.aclose_forcefully(tls)
            return
        self.accepted += 1
        frames = FrameStream(tls)
        try:
            request = await frames.receive_request()
            if request is not None:
                _log_request(peer, request)
                await self._answer(frames, request)
        except (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            logger.debug(f"link from {peer} ended: {_cause(error)}")  # the node hung up
        except Exception:  # one request's bug must not end the agent, the pod's PID 1
            logger.exception(f"link from {peer}: the request failed")
        finally:
            await _close(tls)

    def _refusal(self, peer: str, error: BaseException) -> None:
        self.refused += 1
        now = trio.current_time()
        if now - self._last_refusal_log < REFUSAL_LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        logger.warning(f"link refused from {peer}: {_cause(error)}{more}")
        self._last_refusal_log, self._unlogged = now, 0

    async def _answer(self, frames: FrameStream, request: Request) -> None:
        runner = self.runner
        match request:
            case Start(bundle=bundle):
                await frames.send(await runner.start(bundle))
            case Watch(heartbeat=heartbeat):
                await self._watch(frames, heartbeat)
            case GetUsage():
                await frames.send(await self.usage())
            case _ if runner.bundle is None:
                await frames.send(NOT_STARTED)
            case UpdateVolume(volume=volume):
                await frames.send(await runner.update_volume(volume))
            case Restart(message=message):
                await frames.send(runner.restart(message))
            case Stop(grace=grace):
                await frames.send(await runner.stop(grace))
            case Logs():
                await self._logs(frames, request)
            case Exec() | Attach() | PortForward():
                await self._stream(frames, request, runner.bundle.pod_uid)

    async def _stream(
        self, frames: FrameStream, request: Exec | Attach | PortForward, pod_uid: str
    ) -> None:
        """The requests that stream both ways until either end closes."""
        runner = self.runner
        match request:
            case Exec(container=name):
                container = runner.container(name)
                await serve_exec(frames, container, runner.children, request, self.exec_sessions)
            case Attach(container=name):
                container = runner.container(name)
                stdio = container.stdio if container and container.running else None
                await serve_attach(frames, stdio, request)
            case PortForward():
                await serve_port_forward(frames, request, pod_uid)

    async def _watch(self, frames: FrameStream, heartbeat: float) -> None:
        while True:
            state, version = self.runner.board.current()
            await frames.send(state)
            with trio.move_on_after(max(heartbeat, 0.1)):
                await self.runner.board.wait_newer(version)

    async def _logs(self, frames: FrameStream, request: Logs) -> None:
        logs = self.runner.logs(request.container)
        if logs is None:
            message = f'container "{request.container}" is not in the pod'
            await frames.send(Failed(reason="NotFound", message=message))
            return
        try:
            chunks = logs.read(request)
        except LookupError as error:
            await frames.send(Failed(reason="NotFound", message=str(error)))
            return
        except ValueError as error:
            await frames.send(Failed(reason="BadRequest", message=str(error)))
            return
        async with contextlib.aclosing(chunks):
            async for data in chunks:
                await frames.send(Chunk(data=data))
        await frames.send(End())


async def _close(tls: trio.SSLStream[trio.SocketStream]) -> None:
    """End with TLS's close_notify, so that the node reads a clean end of the answers."""
    with trio.move_on_after(1) as scope:
        scope.shield = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await tls.aclose()
    if scope.cancelled_caught:
        await trio.aclose_forcefully(tls)


def _log_request(peer: str, request: Request) -> None:
    """The node's connections that change something, or watch, are worth a line in the
    instance's log; its frequent questions (usage, logs) are not."""
    kind = type(request).__name__
    if isinstance(request, GetUsage | Logs | PortForward):
        logger.debug(f"link from {peer}: {kind}")
    else:
        logger.info(f"link from {peer}: {kind}")


def _peer(tcp: trio.SocketStream) -> str:
    try:
        host, port, *_ = tcp.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


def _cause(error: BaseException) -> str:
    """One line: the TLS reason when there is one (``TLSV13_ALERT_CERTIFICATE_REQUIRED``)."""
    cause = error.__cause__ or error.__context__ or error
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return cause.reason
    if isinstance(error, trio.TooSlowError):
        return "no handshake in time"
    return str(cause) or type(cause).__name__


async def serve_link(
    server: LinkServer,
    *,
    port: int = AGENT_PORT,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept link connections for ever; ``task_status`` gets the listeners (their port)."""
    await trio.serve_tcp(server.handle, port, host=host, task_status=task_status)
