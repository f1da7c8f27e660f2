"""The trio side of a SPDY/3.1 connection: the sans-IO ``SpdyConnection`` driven over the
socket the kubelet API switched protocols on.

``serve_spdy(socket, received, session)`` owns the connection for the session's whole life,
in one nursery: a reader task feeds the socket to the connection and hands each stream the
peer opens (``SpdyStream``, a half-closeable byte stream with its headers) to
``accept()``; a keep-alive task pings. The session runs in the same nursery, so when the
connection dies (end of input, a socket error, a session error, no PING echo within
``PING_TIMEOUT``, nothing received for ``IDLE_TIMEOUT``) the session is cancelled, and with
it whatever it opened (the provider's process is killed, its forwarded port closed). When
the session returns, its streams' input is dropped, a GOAWAY is sent, and the peer gets
``CLOSE_GRACE`` seconds to hang up (so that closing does not reset bytes it has not read yet).

Back-pressure, both ways and never an unbounded buffer:

- output: writers take one lock around ``send_data`` + ``send_all``, so a writer waits while
  the socket cannot take more; a session that writes what the provider gives it thus reads
  the provider only as fast as the client reads;
- input: each stream queues at most ``INPUT_QUEUE`` DATA frames; when one is full, the reader
  stops reading the socket until the session takes from it. Kubernetes' spdystream does no
  flow control (``SpdyConnection(peer_flow_control=False)``), so TCP is the only brake:
  this holds every stream of the connection while one consumer is slow, which is what
  the kubelet's own spdystream does too (it blocks its frame loop the same way).

Streams are answered (SYN_REPLY) as they open, as spdystream's server side does once the
kubelet's handler accepts them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import trio
from loguru import logger

from vk_trio.kubelet.spdy import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAcknowledged,
    SpdyConnection,
    SpdyError,
    StreamOpened,
    StreamReset,
)

__all__ = [
    "CLOSE_GRACE",
    "IDLE_TIMEOUT",
    "INPUT_QUEUE",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "SpdyStream",
    "SpdyTransport",
    "serve_spdy",
]

IDLE_TIMEOUT = 4 * 3600.0
"""Seconds without a frame from the peer before the connection is closed: the kubelet's
``streamingConnectionIdleTimeout`` default (4 h). kubectl pings every 5 s, so only a
vanished peer reaches it; ``PING_TIMEOUT`` finds those much sooner."""
PING_INTERVAL = 15.0
"""Seconds between our PINGs."""
PING_TIMEOUT = 30.0
"""Seconds a PING may go unanswered (while the reader is not itself holding input back)
before the peer counts as gone."""
CLOSE_GRACE = 5.0
"""Seconds the peer has to hang up after our GOAWAY before the socket is closed anyway."""
INPUT_QUEUE = 4
"""DATA frames queued per stream before the reader stops reading the socket."""
_READ_SIZE = 65536


class SpdyStream(trio.abc.HalfCloseableStream):
    """A stream the peer opened. ``receive_some`` returns ``b""`` once the peer ended its
    side (FIN, reset, or the connection ended); sending on a reset stream or a dead
    connection raises ``trio.BrokenResourceError``."""

    def __init__(self, transport: SpdyTransport, opened: StreamOpened) -> None:
        self._transport = transport
        self.stream_id = opened.stream_id
        self.headers = opened.headers
        self._input, self._queue = trio.open_memory_channel[bytes](INPUT_QUEUE)
        self._pending = b""
        self.reset_by_peer = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        return next((v for n, v in self.headers if n == name.lower()), None)

    def discard_input(self) -> None:
        """Drop whatever the peer sends on this stream from now on (a stream we only write
        to, so that its input never holds the reader back)."""
        self._queue.close()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._queue.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return b""
        size = len(self._pending) if max_bytes is None else max_bytes
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            await self._transport.send(self.stream_id, bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self._transport.send(self.stream_id, b"", fin=True)

    async def aclose(self) -> None:
        """Reset the stream (nothing more either way)."""
        self.discard_input()
        await self._transport.reset(self.stream_id)

    async def _deliver(self, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # its input is discarded
            await self._input.send(data)

    def _end(self, *, reset: bool = False) -> None:
        self.reset_by_peer = self.reset_by_peer or reset
        self._input.close()


class SpdyTransport:
    """One SPDY connection's streams, for the session ``serve_spdy`` runs."""

    def __init__(self, socket: trio.abc.Stream) -> None:
        self._socket = socket
        self._conn = SpdyConnection(peer_flow_control=False)
        self._write_lock = trio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._opened_send, self._opened = trio.open_memory_channel[SpdyStream](INPUT_QUEUE)
        self._acked = trio.Event()
        self._holding_input = False
        self._gone = trio.Event()
        self.ended = ""
        """Why the connection ended ("" while it lives)."""

    async def accept(self) -> SpdyStream:
        """The next stream the peer opens; ``trio.EndOfChannel`` once the connection ended."""
        return await self._opened.receive()

    def stop_accepting(self) -> None:
        """The session has the streams it wants: any later one is reset."""
        self._opened.close()

    async def send(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        async with self._write_lock:
            try:
                self._conn.send_data(stream_id, data, fin)
            except SpdyError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            await self._socket.send_all(self._conn.data_to_send())

    async def reset(self, stream_id: int) -> None:
        async with self._write_lock:
            try:
                self._conn.reset_stream(stream_id)
            except SpdyError:
                return  # already gone
            await self._socket.send_all(self._conn.data_to_send())

    async def _flush(self) -> None:
        async with self._write_lock:
            if data := self._conn.data_to_send():
                await self._socket.send_all(data)

    # -- the reader ----------------------------------------------------------------------

    async def read(self, received: bytes, done: trio.CancelScope) -> None:
        """Feed the socket to the connection until it ends, then cancel ``done``."""
        try:
            data = received
            while not self.ended:
                if data and not await self._feed(data):
                    break
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    data = bytes(await self._socket.receive_some(_READ_SIZE))
                if idle.cancelled_caught:
                    self.ended = f"idle for {IDLE_TIMEOUT:.0f} s"
                elif not data:
                    self.ended = self.ended or "the peer closed the connection"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.ended = f"the connection broke: {exc}"
        finally:
            self._close_streams()
            done.cancel()

    async def _feed(self, data: bytes) -> bool:
        """Handle the events of ``data``; False once the connection ended."""
        events = self._conn.receive_data(data)
        await self._flush()  # PING echoes, RST_STREAM for the peer's mistakes
        for event in events:
            if not await self._handle(event):
                return False
        return True

    async def _handle(self, event: Event) -> bool:
        if isinstance(event, StreamOpened):
            await self._opened_stream(event)
        elif isinstance(event, DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._holding_input = True
                try:
                    await stream._deliver(event.data)
                finally:
                    self._holding_input = False
                if event.fin:
                    del self._streams[event.stream_id]
                    stream._end()
        elif isinstance(event, StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._end(reset=True)
        elif isinstance(event, PingAcknowledged):
            self._acked.set()
        elif isinstance(event, ConnectionTerminated):
            self.ended = event.reason
            return False
        return True

    async def _opened_stream(self, event: StreamOpened) -> None:
        stream = SpdyStream(self, event)
        if event.fin:
            stream._end()
        else:
            self._streams[event.stream_id] = stream
        if not event.unidirectional:
            async with self._write_lock:
                self._conn.reply(event.stream_id, [])
                await self._socket.send_all(self._conn.data_to_send())
        try:
            await self._opened_send.send(stream)
        except trio.BrokenResourceError:
            await stream.aclose()  # the session takes no more streams

    def _close_streams(self) -> None:
        self._opened_send.close()
        for stream in self._streams.values():
            stream._end()
        self._gone.set()

    # -- keep-alive and closing ------------------------------------------------------------

    async def keep_alive(self, done: trio.CancelScope) -> None:
        """PING every ``PING_INTERVAL``; no echo within ``PING_TIMEOUT`` ends everything."""
        while True:
            await trio.sleep(PING_INTERVAL)
            self._acked = trio.Event()
            async with self._write_lock:
                self._conn.ping()
                await self._socket.send_all(self._conn.data_to_send())
            with trio.move_on_after(PING_TIMEOUT):
                await self._acked.wait()
            if not self._acked.is_set() and not self._holding_input:
                self.ended = f"no PING echo within {PING_TIMEOUT:.0f} s"
                done.cancel()
                return

    async def finish(self) -> None:
        """The session is over: drop further input, GOAWAY, and wait a moment for the peer
        to hang up."""
        self._opened.close()
        for stream in self._streams.values():
            stream.discard_input()
        try:
            async with self._write_lock:
                self._conn.goaway()
                await self._socket.send_all(self._conn.data_to_send())
        except (SpdyError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        with trio.move_on_after(CLOSE_GRACE):
            await self._gone.wait()


Session = Callable[[SpdyTransport], Awaitable[None]]


async def serve_spdy(socket: trio.abc.Stream, received: bytes, session: Session) -> None:
    """Run ``session`` over the SPDY connection on ``socket`` (``received``: bytes already
    read past the HTTP request) until it returns or the connection dies; see the module
    docstring for what each end cleans up."""
    transport = SpdyTransport(socket)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.read, received, nursery.cancel_scope)
            nursery.start_soon(transport.keep_alive, nursery.cancel_scope)
            try:
                await session(transport)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                transport.ended = transport.ended or f"the connection broke: {exc}"
            else:
                await transport.finish()
            nursery.cancel_scope.cancel()
    finally:
        if transport.ended and "closed the connection" not in transport.ended:
            logger.debug("spdy connection ended", why=transport.ended)
        await trio.aclose_forcefully(socket)
