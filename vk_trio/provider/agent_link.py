"""The node's end of the link to a pod's agent: one TLS connection per request.

``AgentLink`` knows where the agent listens (the public endpoint Vast maps its port to) and
the pod's link keys (``vk_trio.agent.link``); each method opens a connection, sends one
request and reads its answers. What the agent reports is turned into the node's own types
here (``Processes``, ``Usage``), so that nothing above the provider knows the agent's wire.

Failures are ``AgentUnreachable`` (no connection, a refused handshake, a dropped link: a
temporary error, retried by the caller) or ``AgentRefused`` (the agent answered ``Failed``).

``exec``, ``attach`` and ``port_forward`` hold their connection open for the stream both
ways (``kubectl exec``/``attach``/``port-forward``, relayed by the kubelet API): each is an
async context manager whose object sends the client's input and receives the process's
output (:class:`ProcessStream`) or is the forwarded connection (:class:`ForwardedPort`, a
trio ``HalfCloseableStream``). Leaving the context closes the connection, which, for an
exec still running, makes the agent kill the process.
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
    Attach,
    Bundle,
    Chunk,
    ContainerState,
    End,
    Exec,
    Exit,
    Failed,
    GetUsage,
    Input,
    InputEnd,
    Logs,
    Output,
    PodState,
    PortForward,
    Request,
    Resize,
    Restart,
    Start,
    Stop,
    StreamFrame,
    Terminated,
    UpdateVolume,
    UsageReport,
    Volume,
    Watch,
)
from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.node.provider import (
    LogOptions,
    Processes,
    ProcessEvent,
    ProcessExit,
    ProcessOutput,
    ProcessState,
    Usage,
)
from vk_trio.node.status import ContainerState as NodeState
from vk_trio.node.status import Running, Waiting
from vk_trio.node.status import Terminated as NodeTerminated

__all__ = [
    "AgentLink",
    "AgentRefused",
    "AgentUnreachable",
    "ForwardedPort",
    "ProcessExit",
    "ProcessOutput",
    "ProcessStream",
    "processes",
]

CONNECT_TIMEOUT = 10.0
"""Seconds for the TCP connection and the TLS handshake together."""
WATCH_HEARTBEAT = 10.0
"""The agent sends its state at least this often; twice that silent is a dead link."""
STREAM_CHUNK = 32 * 1024
"""The most input or forwarded bytes in one frame (the agent's output pieces are as big)."""
_LINK_ERRORS = (
    LinkClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)


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
        self._cpu: tuple[float, int] | None = None
        """The last CPU reading: (trio time, cumulative CPU nanoseconds)."""

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

    def _cpu_rate(self, used_ns: int | None) -> int | None:
        """Nano-cores from this cumulative CPU reading and the one before (as cAdvisor
        needs two samples: the first question gets no CPU figure)."""
        now = trio.current_time()
        previous, self._cpu = self._cpu, (None if used_ns is None else (now, used_ns))
        if previous is None or used_ns is None or now <= previous[0]:
            return None
        return max(0, round((used_ns - previous[1]) / (now - previous[0])))

    async def stop(self, grace: float) -> None:
        """Have the agent stop the pod (``preStop`` hooks, then the signals) within
        ``grace`` seconds; returns once it answered that every process ended."""
        await self._one(Stop(grace=grace))

    async def usage(self) -> Usage:
        answer = await self._one(GetUsage())
        if not isinstance(answer, UsageReport):
            raise AgentUnreachable(f"the agent answered {type(answer).__name__} to a usage query")
        return Usage(
            cpu_nano_cores=self._cpu_rate(answer.cpu_usage_nano_seconds),
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

    @asynccontextmanager
    async def _stream(self, request: Exec | Attach | PortForward) -> AsyncIterator[FrameStream]:
        """A stream connection, once the agent accepted the request."""
        async with self._connection(request) as link:
            with trio.move_on_after(CONNECT_TIMEOUT) as silent:
                first = await _receive(link)
            if silent.cancelled_caught:
                raise AgentUnreachable(f"the agent did not answer {type(request).__name__}")
            if isinstance(first, Failed):
                raise AgentRefused(first.reason, first.message)
            if not isinstance(first, Accepted):
                raise AgentUnreachable(f"the agent answered {type(first).__name__}, not Accepted")
            yield link

    @asynccontextmanager
    async def exec(
        self,
        container: str,
        command: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        width: int | None = None,
        height: int | None = None,
    ) -> AsyncIterator[ProcessStream]:
        """Run ``command`` in the container; ``AgentRefused`` (reason ``NotFound`` or
        ``NotRunning``) when there is no running container of that name. A command that
        cannot run is accepted and exits 126/127 with the reason as its message."""
        request = Exec(
            container=container,
            command=command,
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            width=width,
            height=height,
        )
        async with self._stream(request) as link:
            yield ProcessStream(link)

    @asynccontextmanager
    async def attach(
        self,
        container: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncIterator[ProcessStream]:
        """Join the container's running process: its output from now on, its stdin when
        its spec has one; the process's exit ends it (``ProcessExit``)."""
        request = Attach(container=container, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        async with self._stream(request) as link:
            yield ProcessStream(link)

    @asynccontextmanager
    async def port_forward(self, port: int) -> AsyncIterator[ForwardedPort]:
        """One TCP connection to ``port`` on the instance's loopback; ``AgentRefused``
        (reason ``ConnectionRefused``) when nothing listens there."""
        async with self._stream(PortForward(port=port)) as link:
            yield ForwardedPort(link)

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


async def _receive(link: FrameStream) -> StreamFrame | None:
    try:
        return await link.receive_stream()
    except _LINK_ERRORS as exc:
        raise AgentUnreachable(f"the link to the agent broke: {exc}") from exc


async def _send(link: FrameStream, frame: StreamFrame) -> None:
    try:
        await link.send(frame)
    except _LINK_ERRORS as exc:
        raise AgentUnreachable(f"the link to the agent broke: {exc}") from exc


class ProcessStream:
    """An exec or attach: input one way, output and the exit the other. One task may
    receive while others send (input, resizes)."""

    def __init__(self, link: FrameStream) -> None:
        self._link = link
        self.exit: ProcessExit | None = None

    async def write(self, data: bytes) -> None:
        """Bytes for the process's stdin; waits while the agent cannot take more."""
        for start in range(0, len(data), STREAM_CHUNK):
            await _send(self._link, Input(data=data[start : start + STREAM_CHUNK]))

    async def close_input(self) -> None:
        """The client closed stdin (on a terminal: ^D)."""
        await _send(self._link, InputEnd())

    async def resize(self, width: int, height: int) -> None:
        """The client's terminal is now ``width`` columns by ``height`` rows."""
        await _send(self._link, Resize(width=width, height=height))

    async def receive(self) -> ProcessOutput | ProcessExit:
        """The next piece of output, or the exit (again on every later call). Raises
        ``AgentUnreachable`` when the link ends before the exit."""
        while self.exit is None:
            frame = await _receive(self._link)
            if isinstance(frame, Output):
                return ProcessOutput(frame.stream, frame.data)
            if isinstance(frame, Exit):
                self.exit = ProcessExit(frame.code, frame.message)
            elif frame is None:
                raise AgentUnreachable("the agent closed the link before the process ended")
        return self.exit


class ForwardedPort(trio.abc.HalfCloseableStream):
    """One forwarded TCP connection, as a trio stream; a broken link raises
    ``AgentUnreachable``. One task may receive while another sends."""

    def __init__(self, link: FrameStream) -> None:
        self._link = link
        self._pending = b""
        self._ended = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        for start in range(0, len(data), STREAM_CHUNK):
            await _send(self._link, Chunk(data=data[start : start + STREAM_CHUNK]))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await _send(self._link, End())

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` (default: a frame's worth); ``b""`` once the port's side
        ended its writing."""
        while not self._pending and not self._ended:
            frame = await _receive(self._link)
            if isinstance(frame, Chunk):
                self._pending = frame.data
            elif isinstance(frame, End):
                self._ended = True
            elif frame is None:
                raise AgentUnreachable("the agent closed the forwarded connection")
        size = len(self._pending) if max_bytes is None else max_bytes
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._link.stream)


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
        tuple(
            ProcessEvent(e.seq, e.container, e.init, e.type, e.reason, e.message)
            for e in state.events
        ),
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
