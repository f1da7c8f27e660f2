"""The WebSocket channel protocols on a trio ``Stream``: handshake, messages, channels, tunnel.

Layers, each usable alone:

- ``handshake`` / ``h11_switch``: answer the upgrade. The request has already been parsed by
  h11 (``vk_trio.http_server``), so the cleanest takeover is not wsproto's ``H11Handshake``
  (it wants the raw request bytes, which h11 has consumed) but the 101 computed here from the
  parsed headers and sent through the same ``h11.Connection`` as an
  ``InformationalResponse``; h11 then hands over the bytes it read past the request
  (``trailing_data``), which become wsproto's first input. ``handshake`` does the same
  without h11, writing the 101 (or the refusal) to the stream itself.
- ``WebSocket``: whole messages over wsproto's post-handshake ``Connection``. One task reads;
  a lock serialises writers; pings are answered; any frame in or out counts as activity for
  the idle timeout (like the kubelet's ``SetDeadline`` on every read and write, 4 h there).
- ``ChannelSession``: the Kubernetes channels over those messages, for remotecommand and
  WebSocket port-forward; ``WebSocketTunnel``: a ``trio.abc.Stream`` over binary messages,
  for the SPDY session of a tunneled port-forward.

Back-pressure, not buffering: what the server sends waits in ``send_all`` until the socket
takes it (a client that never reads blocks the sender after the kernel buffers fill, and the
idle timeout ends the session); what the client sends waits in small bounded queues (a few
messages of at most ``max_message`` bytes) and, when a consumer falls behind, the reader stops
reading the socket, which stops the client through TCP. As in the kubelet (``io.Pipe`` per
channel) a full channel holds back the others too; a channel whose consumer is done must be
closed with ``close_input`` so that what still arrives for it is dropped instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio
from loguru import logger
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    TextMessage,
)

from vk_trio.kubelet.streaming.websocket.protocol import (
    ERROR,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    Accept,
    ChannelProtocol,
    CloseChannel,
    Data,
    ProtocolViolation,
    Rejection,
    Tunnel,
    accept,
    check_upgrade,
    decode,
    encode,
    encode_status,
    offered_protocols,
    port_prefix,
)

__all__ = [
    "ChannelSession",
    "WebSocket",
    "WebSocketTunnel",
    "h11_switch",
    "handshake",
    "open_port_forward",
    "open_remotecommand",
    "open_tunnel",
    "open_websocket",
]

IDLE_TIMEOUT = 4 * 3600.0
"""Seconds without a frame either way before the session ends (the kubelet's default)."""

CLOSE_TIMEOUT = 10.0
"""Seconds to wait for the peer's close frame after ours before dropping the connection."""

MAX_MESSAGE = 1 << 20
"""Largest client message accepted (bytes); a larger one closes with 1009."""

MAX_FRAME = 32 * 1024
"""Largest payload the server puts in one message; longer writes are split."""

QUEUE = 4
"""Whole messages buffered per direction or channel before the reader stops reading."""

_READ_SIZE = 65536

_Pipe = tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]
Selector = Callable[[Sequence[str]], ChannelProtocol | Tunnel | Rejection]


async def handshake(
    stream: trio.abc.Stream, method: str, headers: Mapping[str, str], select: Selector
) -> ChannelProtocol | Tunnel | None:
    """Answer an upgrade request on ``stream`` that nothing has answered yet.

    ``select`` is ``protocol.select_remotecommand`` or ``select_port_forward``. Returns the
    negotiated protocol after writing the 101, or None after writing the refusal.
    """
    decision = check_upgrade(method, headers) or select(
        offered_protocols(headers.get("sec-websocket-protocol"))
    )
    if isinstance(decision, Rejection):
        await stream.send_all(decision.to_bytes())
        return None
    await stream.send_all(accept(headers, _subprotocol(decision)).to_bytes())
    return decision


def _subprotocol(decision: ChannelProtocol | Tunnel) -> str:
    return decision.subprotocol if isinstance(decision, Tunnel) else decision.name


def h11_switch(conn: h11.Connection, accepted: Accept) -> tuple[bytes, bytes]:
    """Switch an h11 server connection to WebSocket: (bytes to write, bytes read past it).

    ``conn`` has delivered the request's ``EndOfMessage``; h11 agrees to a 101 because the
    request carried ``Upgrade``. The second value is the start of the WebSocket stream.
    """
    data = conn.send(h11.InformationalResponse(status_code=101, headers=list(accepted.headers)))
    return data or b"", conn.trailing_data[0]


class WebSocket:
    """Whole messages (``bytes`` binary, ``str`` text) on a stream past its 101."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_message: int = MAX_MESSAGE,
        queue: int = QUEUE,
    ) -> None:
        self._stream = stream
        self._ws = Connection(ConnectionType.SERVER)
        self._send_lock = trio.Lock()
        self._incoming_in, self._incoming = trio.open_memory_channel[bytes | str](queue)
        self._partial: list[bytes | str] = []
        self._partial_size = 0
        self._max_message = max_message
        self._idle_timeout = idle_timeout
        self._deadline = trio.current_time() + idle_timeout
        self._peer_gone = trio.Event()
        self.close_code: int | None = None
        """The peer's close code once it closed (1006: the connection dropped without one)."""
        self.idle_expired = False

    async def receive_message(self) -> bytes | str | None:
        """The next whole message; None once the peer closed or the connection ended."""
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def send_message(self, data: bytes | str) -> None:
        """Send one message; waits while the socket is full. Raises ``BrokenResourceError``
        once the connection is closing."""
        event: Message[Any] = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        await self._send(event)

    async def wait_peer_gone(self) -> None:
        """Return once the peer closed or the connection ended: a session that outlives its
        client would keep the provider's process running for nobody."""
        await self._peer_gone.wait()

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (the client answers with a pong, which counts as activity)."""
        await self._send(Ping(payload))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Send our close frame, wait up to ``CLOSE_TIMEOUT`` for the peer's, drop the socket."""
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            async with self._send_lock:
                if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    await self._write(self._ws.send(CloseConnection(code, reason)))
            await self._peer_gone.wait()
        await trio.aclose_forcefully(self._stream)

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            if self._ws.state is not ConnectionState.OPEN:
                raise trio.BrokenResourceError("the websocket is closing")
            await self._write(self._ws.send(event))

    async def _write(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError("the websocket is closed") from exc
        self._touch()

    def _touch(self) -> None:
        self._deadline = trio.current_time() + self._idle_timeout

    async def _read_loop(self, trailing: bytes) -> None:
        try:
            data: bytes | None = trailing
            while await self._feed(data):
                data = await self._receive_some()
        finally:
            self._incoming_in.close()
            self._peer_gone.set()

    async def _receive_some(self) -> bytes | None:
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        self._touch()
        return bytes(data) or None

    async def _feed(self, data: bytes | None) -> bool:
        """Hand ``data`` (None: end of input) to wsproto and act on what it saw; False when
        the connection is over for reading."""
        if data == b"":
            return True
        if self._ws.state is ConnectionState.CLOSED:
            return False
        self._ws.receive_data(data)
        for event in self._ws.events():
            if not await self._on_event(event):
                return False
        return data is not None

    async def _on_event(self, event: Event) -> bool:
        if isinstance(event, Message):
            return await self._on_message(event)
        if isinstance(event, Ping):
            await self._reply(event.response())
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                await self._reply(event.response())
            elif self._ws.state is ConnectionState.OPEN:  # wsproto found a protocol error
                await self._reply(CloseConnection(event.code, event.reason))
            return False
        return True

    async def _reply(self, event: Event) -> None:
        try:
            async with self._send_lock:
                await self._write(self._ws.send(event))
        except trio.BrokenResourceError:
            pass
        except Exception as exc:  # wsproto refusing a reply in a closing state
            logger.debug("websocket reply not sent", error=str(exc))

    async def _on_message(self, event: Message[Any]) -> bool:
        self._partial.append(event.data)
        self._partial_size += len(event.data)
        if self._partial_size > self._max_message:
            await self._reply(CloseConnection(1009, "message too big"))
            return False
        if not event.message_finished:
            return True
        parts, self._partial, self._partial_size = self._partial, [], 0
        message: bytes | str
        if isinstance(event, TextMessage):
            message = "".join(str(p) for p in parts)
        else:
            message = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._incoming_in.send(message)  # blocks while the consumer is behind
        return True

    async def _watch_idle(self, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep_until(self._deadline)
            if trio.current_time() >= self._deadline:
                break
        self.idle_expired = True
        logger.debug("websocket idle, closing", timeout=self._idle_timeout)
        scope.cancel()


@asynccontextmanager
async def open_websocket(
    stream: trio.abc.Stream,
    *,
    trailing: bytes = b"",
    idle_timeout: float = IDLE_TIMEOUT,
    max_message: int = MAX_MESSAGE,
) -> AsyncIterator[WebSocket]:
    """A ``WebSocket`` on ``stream`` (past its 101) for the body of the ``async with``.

    Leaving closes it (close frame, wait for the peer's, drop the socket). Idling past
    ``idle_timeout`` cancels the body and drops the socket; ``ws.idle_expired`` says so.
    """
    ws = WebSocket(stream, idle_timeout=idle_timeout, max_message=max_message)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws._read_loop, trailing)
        nursery.start_soon(ws._watch_idle, nursery.cancel_scope)
        try:
            yield ws
        finally:
            if ws.idle_expired:
                await trio.aclose_forcefully(stream)
            else:
                await ws.close()
            nursery.cancel_scope.cancel()


class ChannelSession:
    """Numbered channels over a ``WebSocket`` in one negotiated channel protocol."""

    def __init__(
        self,
        ws: WebSocket,
        protocol: ChannelProtocol,
        channels: int,
        *,
        readable: Collection[int],
        writable: Collection[int],
        queue: int = QUEUE,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.channels = channels
        self._writable = frozenset(writable)
        self._inputs: dict[int, _Pipe] = {
            ch: trio.open_memory_channel[bytes](queue) for ch in readable
        }

    async def send(self, channel: int, data: bytes) -> None:
        """Write ``data`` on ``channel`` (in messages of at most ``MAX_FRAME``), waiting for
        the socket. A channel the session does not write (not requested) discards it, as the
        kubelet's do. An empty ``data`` sends an empty message on the channel."""
        if channel not in self._writable:
            return
        view = memoryview(data)
        start = 0
        while True:
            chunk = bytes(view[start : start + MAX_FRAME])
            await self.ws.send_message(encode(self.protocol, channel, chunk))
            start += MAX_FRAME
            if start >= len(view):
                return

    async def receive(self, channel: int) -> bytes:
        """The next piece of ``channel``'s input; b"" at its end (v5 CLOSE, the peer's close,
        or ``close_input``). A channel the session does not read is always at its end."""
        pair = self._inputs.get(channel)
        if pair is None:
            return b""
        try:
            return await pair[1].receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    def close_input(self, channel: int) -> None:
        """Stop reading ``channel``: what the client still sends on it is dropped."""
        pair = self._inputs.get(channel)
        if pair is not None:
            pair[1].close()

    async def write_status(self, status: Mapping[str, Any], channel: int = ERROR) -> None:
        """Report how the session ended on the error channel, in the protocol's form."""
        payload = encode_status(self.protocol, status)
        if payload is not None:
            await self.send(channel, payload)

    async def dispatch(self) -> None:
        """Route client messages to the channels until the connection ends (run as a task)."""
        try:
            while (message := await self.ws.receive_message()) is not None:
                if not await self._route(message):
                    await self.ws.close(1002, "protocol error")
                    return
        finally:
            for sender, _ in self._inputs.values():
                sender.close()

    async def _route(self, message: bytes | str) -> bool:
        try:
            frame = decode(self.protocol, message, self.channels)
        except ProtocolViolation as exc:
            logger.warning("websocket protocol error", error=str(exc))
            return False
        if isinstance(frame, CloseChannel):
            pair = self._inputs.get(frame.channel)
            if pair is not None:
                pair[0].close()
        elif isinstance(frame, Data):
            await self._deliver(frame)
        else:
            logger.debug("websocket message skipped", reason=frame.reason)
        return True

    async def _deliver(self, frame: Data) -> None:
        pair = self._inputs.get(frame.channel)
        if pair is None or not frame.data:
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await pair[0].send(frame.data)  # blocks while the channel's reader is behind


@asynccontextmanager
async def _session(
    stream: trio.abc.Stream, session_of: Callable[[WebSocket], ChannelSession], **ws: Any
) -> AsyncIterator[ChannelSession]:
    async with open_websocket(stream, **ws) as websocket, trio.open_nursery() as nursery:
        session = session_of(websocket)
        nursery.start_soon(session.dispatch)
        yield session
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_remotecommand(
    stream: trio.abc.Stream,
    protocol: ChannelProtocol,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    **ws: Any,
) -> AsyncIterator[ChannelSession]:
    """An exec/attach session: channels 0-4, and the empty message on the lowest writable
    output (stdout, else stderr, else error) that tells the client the session is up.

    ``ws`` goes to ``open_websocket`` (``trailing``, ``idle_timeout``, ``max_message``).
    """
    readable = [ch for ch, on in ((STDIN, stdin), (RESIZE, True)) if on]
    writable = [ch for ch, on in ((STDOUT, stdout), (STDERR, stderr), (ERROR, True)) if on]

    def session_of(websocket: WebSocket) -> ChannelSession:
        return ChannelSession(websocket, protocol, 5, readable=readable, writable=writable)

    async with _session(stream, session_of, **ws) as session:
        await session.send(writable[0], b"")
        yield session


@asynccontextmanager
async def open_port_forward(
    stream: trio.abc.Stream, protocol: ChannelProtocol, ports: Sequence[int], **ws: Any
) -> AsyncIterator[ChannelSession]:
    """A WebSocket port-forward: per port ``i`` data on ``2i`` (both ways) and errors on
    ``2i+1``, each opened with the port as little-endian uint16."""
    count = 2 * len(ports)

    def session_of(websocket: WebSocket) -> ChannelSession:
        return ChannelSession(
            websocket, protocol, count, readable=range(0, count, 2), writable=range(count)
        )

    async with _session(stream, session_of, **ws) as session:
        for i, port in enumerate(ports):
            await session.send(2 * i, port_prefix(port))
            await session.send(2 * i + 1, port_prefix(port))
        yield session


class WebSocketTunnel(trio.abc.Stream):
    """A byte stream over binary messages: where a tunneled port-forward runs its SPDY.

    Each ``send_all`` is one message (split at ``MAX_FRAME``), as client-go's tunneling
    connection writes; ``receive_some`` returns message bytes in order, b"" at the close. A
    text message is not SPDY: it breaks the stream.
    """

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._pending = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME):
            await self.ws.send_message(bytes(view[start : start + MAX_FRAME]))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._pending:
            message = await self.ws.receive_message()
            if message is None:
                return b""
            if isinstance(message, str):
                raise trio.BrokenResourceError("text message in a SPDY tunnel")
            self._pending = message
        size = max_bytes or len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    async def aclose(self) -> None:
        await self.ws.close()


@asynccontextmanager
async def open_tunnel(stream: trio.abc.Stream, **ws: Any) -> AsyncIterator[WebSocketTunnel]:
    """A ``WebSocketTunnel`` on ``stream`` (past its 101) for the ``async with`` body."""
    async with open_websocket(stream, **ws) as websocket:
        yield WebSocketTunnel(websocket)
