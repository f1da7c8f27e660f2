"""The server side of one SPDY/3.1 connection as a state machine: bytes in, events out;
method calls in, bytes queued for ``data_to_send``. No I/O and no clock.

Error handling follows the spec's two kinds. A *stream error* (data on a closed stream, a
window overrun, a repeated SYN_STREAM) queues RST_STREAM and reports ``StreamReset`` with
``remote_reset=False``; the connection carries on. A *session error* (a frame that does not
parse, a header block that does not inflate, a SYN_STREAM ID going backwards) queues GOAWAY
and reports ``ConnectionTerminated``; after that the connection takes no more input and
refuses to send. Nothing the peer sends makes ``receive_data`` raise. Calls that misuse the
connection (sending on a stream that is closed, before the reply, after termination) raise a
``SpdyError`` subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vk_trio.kubelet.spdy._frames import (
    MAX_31BIT,
    Data,
    Frame,
    FrameError,
    FrameReader,
    GoAwayFrame,
    GoAwayStatus,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    SettingId,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
    serialize,
)
from vk_trio.kubelet.spdy._headers import (
    HeaderBlockError,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
)

#: The initial window of every stream and (SPDY/3.1) of the connection, both ways.
DEFAULT_WINDOW = 64 * 1024
#: DATA frames we send carry at most this much: small enough that one stream does not hold
#: the socket for long, large enough that the 8-byte header is noise.
MAX_DATA_CHUNK = 16 * 1024


class SpdyError(Exception):
    """A call the connection cannot honour in its current state."""


class StreamClosedError(SpdyError):
    """The stream is unknown, reset, or closed in our direction: nothing more goes on it."""

    def __init__(self, stream_id: int, why: str) -> None:
        super().__init__(f"SPDY stream {stream_id}: {why}")
        self.stream_id = stream_id


class ConnectionClosedError(SpdyError):
    """The connection has ended (a session error, or the peer's end of input)."""


@dataclass(frozen=True)
class StreamOpened:
    """The peer's SYN_STREAM. ``fin``: it will send nothing more; ``unidirectional``: we may
    send nothing (not even a reply)."""

    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (lowercase, as SPDY carries it), or None."""
        return next((v for n, v in self.headers if n == name.lower()), None)


@dataclass(frozen=True)
class HeadersReceived:
    """A HEADERS frame on an open stream (extra headers after SYN_STREAM)."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class DataReceived:
    """Bytes on a stream; they hold the peer back until the caller ``acknowledge``s them."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class StreamReset:
    """The stream is gone: reset by the peer (``remote_reset``) or by us for its error."""

    stream_id: int
    status: int
    remote_reset: bool = True


@dataclass(frozen=True)
class PingReceived:
    """The peer's PING; its echo is already queued."""

    ping_id: int


@dataclass(frozen=True)
class PingAcknowledged:
    """The echo of a PING we sent."""

    ping_id: int


@dataclass(frozen=True)
class GoAway:
    """The peer's GOAWAY: it opens no more streams; those up to ``last_stream_id`` go on."""

    last_stream_id: int
    status: int


@dataclass(frozen=True)
class WindowUpdated:
    """Our send window grew (``stream_id`` 0: the connection's): blocked sends may go on."""

    stream_id: int
    delta: int


@dataclass(frozen=True)
class SettingsReceived:
    """The peer's SETTINGS, by ID; INITIAL_WINDOW_SIZE is already applied."""

    settings: dict[int, int]


@dataclass(frozen=True)
class ConnectionTerminated:
    """The connection is over: our session error (GOAWAY queued) or the peer's end of input."""

    status: int
    reason: str


Event = (
    StreamOpened
    | HeadersReceived
    | DataReceived
    | StreamReset
    | PingReceived
    | PingAcknowledged
    | GoAway
    | WindowUpdated
    | SettingsReceived
    | ConnectionTerminated
)


class _SessionError(Exception):
    """Raised inside frame handling to end the connection with GOAWAY PROTOCOL_ERROR."""


@dataclass
class _Stream:
    stream_id: int
    send_window: int
    recv_window: int = DEFAULT_WINDOW
    #: Bytes the caller has acknowledged that no WINDOW_UPDATE has announced yet.
    unannounced: int = 0
    replied: bool = False
    local_closed: bool = False
    remote_closed: bool = False


class SpdyConnection:
    """The server end of a SPDY/3.1 connection: the peer opens streams (odd IDs), we reply.

    ``peer_flow_control=False`` is for peers that do no flow control, which is what
    Kubernetes' spdystream is: it never sends WINDOW_UPDATE and ignores ours, so keeping to
    its window would stall every stream after 64 KiB, and holding it to ours would reset a
    ``kubectl cp`` upload. Without it, sends are bounded only by the caller's socket writes
    and our receive windows are neither enforced nor advertised; back-pressure is then the
    caller not reading the socket. The default follows the spec.

    ``connection_window`` is how much the peer may have in flight over all streams together
    (SPDY/3.1 starts it at 64 KiB; a larger one is announced by a WINDOW_UPDATE on stream 0
    queued at once), so that one stream's unread bytes do not stall the others.
    """

    def __init__(
        self, *, peer_flow_control: bool = True, connection_window: int = DEFAULT_WINDOW
    ) -> None:
        if not DEFAULT_WINDOW <= connection_window <= MAX_31BIT:
            raise ValueError(f"connection_window must be {DEFAULT_WINDOW}..{MAX_31BIT}")
        self._flow_control = peer_flow_control
        self._reader = FrameReader()
        self._inflate = HeaderDecompressor()
        self._deflate = HeaderCompressor()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._last_peer_stream_id = 0
        self._initial_send_window = DEFAULT_WINDOW
        self._conn_send_window = DEFAULT_WINDOW
        self._conn_window = connection_window
        self._conn_recv_window = connection_window
        self._conn_unannounced = 0
        self._next_ping_id = 2
        self._pings_sent: set[int] = set()
        self._goaway_sent = False
        self._terminated = False
        self._handlers: dict[type, Callable[[Frame], list[Event]]] = {
            SynStream: self._on_syn_stream,  # type: ignore[dict-item]
            SynReply: self._on_syn_reply,  # type: ignore[dict-item]
            HeadersFrame: self._on_headers,  # type: ignore[dict-item]
            Data: self._on_data,  # type: ignore[dict-item]
            RstStream: self._on_rst_stream,  # type: ignore[dict-item]
            Settings: self._on_settings,  # type: ignore[dict-item]
            Ping: self._on_ping,  # type: ignore[dict-item]
            GoAwayFrame: self._on_goaway,  # type: ignore[dict-item]
            WindowUpdate: self._on_window_update,  # type: ignore[dict-item]
        }
        if peer_flow_control and connection_window > DEFAULT_WINDOW:
            self._queue(WindowUpdate(0, connection_window - DEFAULT_WINDOW))

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Events for the bytes read from the socket, in order. ``b""`` means the peer closed
        its end: that ends the connection (``ConnectionTerminated``). Never raises for what
        the peer sent; after termination further input is ignored."""
        if self._terminated:
            return []
        if not data:
            return self._end_of_input()
        self._reader.feed(data)
        events: list[Event] = []
        try:
            while (frame := self._reader.next_frame()) is not None:
                handler = self._handlers.get(type(frame))
                if handler is not None:  # an unknown control frame is ignored (§2.2.1)
                    events += handler(frame)
        except (FrameError, HeaderBlockError, _SessionError) as exc:
            events.append(self._terminate(GoAwayStatus.PROTOCOL_ERROR, str(exc)))
        return events

    def _end_of_input(self) -> list[Event]:
        truncated = self._reader.pending
        self._terminated = True
        self._reader.clear()
        if truncated:
            reason = f"peer closed the connection inside a frame ({truncated} bytes pending)"
            return [ConnectionTerminated(GoAwayStatus.PROTOCOL_ERROR, reason)]
        return [ConnectionTerminated(GoAwayStatus.OK, "peer closed the connection")]

    def _terminate(self, status: int, reason: str) -> ConnectionTerminated:
        if not self._goaway_sent:
            self._queue(GoAwayFrame(self._last_peer_stream_id, status))
        self._goaway_sent = self._terminated = True
        self._reader.clear()
        self._streams.clear()
        return ConnectionTerminated(status, reason)

    def _stream_error(self, stream_id: int, status: RstStatus) -> list[Event]:
        """RST_STREAM for the peer's mistake; the caller hears of it if it knew the stream."""
        self._queue(RstStream(stream_id, status))
        if self._streams.pop(stream_id, None) is None:
            return []
        return [StreamReset(stream_id, status, remote_reset=False)]

    def _on_syn_stream(self, frame: SynStream) -> list[Event]:
        # Always inflate first: the zlib stream must see every block, even refused ones.
        headers = self._inflate.decompress(frame.header_block)
        sid = frame.stream_id
        if sid == 0:
            raise _SessionError("SYN_STREAM on stream 0")
        if sid < self._last_peer_stream_id:
            raise _SessionError(f"SYN_STREAM {sid} after {self._last_peer_stream_id}")
        if self._goaway_sent:
            return []  # after our GOAWAY new streams are ignored (§2.6.6)
        if sid == self._last_peer_stream_id or sid % 2 == 0:
            # A repeated ID, or an even (server-initiated) one from the client.
            return self._stream_error(sid, RstStatus.PROTOCOL_ERROR)
        self._last_peer_stream_id = sid
        self._streams[sid] = _Stream(
            sid,
            send_window=self._initial_send_window,
            local_closed=frame.unidirectional,
            remote_closed=frame.fin,
        )
        self._forget_if_closed(sid)
        return [
            StreamOpened(
                sid,
                headers,
                fin=frame.fin,
                unidirectional=frame.unidirectional,
                associated_stream_id=frame.associated_stream_id,
                priority=frame.priority,
            )
        ]

    def _on_syn_reply(self, frame: SynReply) -> list[Event]:
        self._inflate.decompress(frame.header_block)
        # We open no streams, so there is nothing the peer could be replying to.
        if frame.stream_id in self._streams:
            return self._stream_error(frame.stream_id, RstStatus.PROTOCOL_ERROR)
        return self._stream_error(frame.stream_id, RstStatus.INVALID_STREAM)

    def _on_headers(self, frame: HeadersFrame) -> list[Event]:
        headers = self._inflate.decompress(frame.header_block)
        stream = self._receiving_stream(frame.stream_id)
        if not isinstance(stream, _Stream):
            return stream
        if frame.fin:
            self._close_remote(stream)
        return [HeadersReceived(frame.stream_id, headers, fin=frame.fin)]

    def _receiving_stream(self, stream_id: int) -> _Stream | list[Event]:
        """The stream a frame from the peer is for, or the events of refusing it (§2.4.2)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._goaway_sent:
                return []
            return self._stream_error(stream_id, RstStatus.INVALID_STREAM)
        if stream.remote_closed:
            return self._stream_error(stream_id, RstStatus.STREAM_ALREADY_CLOSED)
        return stream

    def _on_data(self, frame: Data) -> list[Event]:
        if frame.stream_id == 0:
            raise _SessionError("DATA on stream 0")
        size = len(frame.data)
        if self._flow_control:
            if size > self._conn_recv_window:
                raise _SessionError(f"{size} bytes of DATA beyond the connection window")
            self._conn_recv_window -= size
        stream = self._receiving_stream(frame.stream_id)
        if not isinstance(stream, _Stream):
            self._credit_connection(size)  # the caller never sees these bytes
            return stream
        if self._flow_control and size > stream.recv_window:
            self._credit_connection(size)
            return self._stream_error(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR)
        stream.recv_window -= size
        if frame.fin:
            self._close_remote(stream)
        return [DataReceived(frame.stream_id, frame.data, fin=frame.fin)]

    def _on_rst_stream(self, frame: RstStream) -> list[Event]:
        # Never answer an RST_STREAM with one (§2.4.2), even for a stream we do not know.
        if self._streams.pop(frame.stream_id, None) is None:
            return []
        return [StreamReset(frame.stream_id, frame.status, remote_reset=True)]

    def _on_settings(self, frame: Settings) -> list[Event]:
        values = {entry.id: entry.value for entry in frame.entries}
        window = values.get(SettingId.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > MAX_31BIT:
                raise _SessionError(f"INITIAL_WINDOW_SIZE {window} exceeds 2^31-1")
            # Open streams move by the difference and may go negative (§2.6.8); the
            # connection window is not a stream window and stays as it is.
            delta = window - self._initial_send_window
            self._initial_send_window = window
            for stream in self._streams.values():
                stream.send_window += delta
        return [SettingsReceived(values)]

    def _on_ping(self, frame: Ping) -> list[Event]:
        if frame.ping_id % 2 == 0:  # our parity: an echo (or junk, ignored as §2.6.5 says)
            if frame.ping_id in self._pings_sent:
                self._pings_sent.discard(frame.ping_id)
                return [PingAcknowledged(frame.ping_id)]
            return []
        self._queue(frame)
        return [PingReceived(frame.ping_id)]

    def _on_goaway(self, frame: GoAwayFrame) -> list[Event]:
        return [GoAway(frame.last_good_stream_id, frame.status)]

    def _on_window_update(self, frame: WindowUpdate) -> list[Event]:
        if frame.stream_id == 0:
            if self._conn_send_window + frame.delta > MAX_31BIT:
                raise _SessionError("WINDOW_UPDATE grows the connection window beyond 2^31-1")
            self._conn_send_window += frame.delta
            return [WindowUpdated(0, frame.delta)]
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return []  # it may have closed while the update was in flight
        if stream.send_window + frame.delta > MAX_31BIT:
            return self._stream_error(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR)
        stream.send_window += frame.delta
        return [WindowUpdated(frame.stream_id, frame.delta)]

    # -- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued since the last call; write it all to the socket."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def reply(self, stream_id: int, headers: Iterable[tuple[str, str]], fin: bool = False) -> None:
        """SYN_REPLY: the peer's streams wait for it before anything else is sent on them."""
        stream = self._sending_stream(stream_id)
        if stream.replied:
            raise SpdyError(f"SPDY stream {stream_id} already has its SYN_REPLY")
        block = self._deflate.compress(headers)  # may raise ValueError: before any change
        stream.replied = True
        self._queue(SynReply(stream_id, block, fin=fin))
        if fin:
            self._close_local(stream)

    def send_headers(
        self, stream_id: int, headers: Iterable[tuple[str, str]], fin: bool = False
    ) -> None:
        """A HEADERS frame after the reply."""
        stream = self._replied_stream(stream_id)
        self._queue(HeadersFrame(stream_id, self._deflate.compress(headers), fin=fin))
        if fin:
            self._close_local(stream)

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send_data`` would take now on this stream (0 when blocked)."""
        stream = self._sending_stream(stream_id)
        if not self._flow_control:
            return MAX_31BIT
        return max(0, min(stream.send_window, self._conn_send_window))

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> int:
        """Queue as much of ``data`` as the peer's windows allow and return how much that was.

        Less than ``len(data)`` means blocked: keep the rest and try again after a
        ``WindowUpdated`` event. ``fin`` is sent only with the last byte, so a partial send
        leaves the stream open. Raises StreamClosedError / SpdyError for a stream we may not
        send on (reset, unknown, ended, or not yet replied to).
        """
        stream = self._replied_stream(stream_id)
        accepted = min(len(data), self.send_window(stream_id))
        for start in range(0, accepted, MAX_DATA_CHUNK):
            chunk = data[start : min(start + MAX_DATA_CHUNK, accepted)]
            last = start + MAX_DATA_CHUNK >= accepted
            self._queue(Data(stream_id, chunk, fin=fin and last and accepted == len(data)))
        if self._flow_control:
            stream.send_window -= accepted
            self._conn_send_window -= accepted
        if fin and accepted == len(data):
            if accepted == 0:
                self._queue(Data(stream_id, b"", fin=True))
            self._close_local(stream)
        return accepted

    def end_stream(self, stream_id: int) -> None:
        """Half-close our direction with an empty DATA frame carrying FIN."""
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """RST_STREAM: the stream ends at once both ways. Bytes already received on it still
        count against the connection window until the caller ``acknowledge``s them."""
        self._check_open()
        if self._streams.pop(stream_id, None) is None:
            raise StreamClosedError(stream_id, "is not open")
        self._queue(RstStream(stream_id, status))

    def ping(self, ping_id: int | None = None) -> int:
        """Queue a PING (server IDs are even) and return its ID; ``PingAcknowledged``
        reports the echo."""
        self._check_open()
        if ping_id is None:
            ping_id = self._next_ping_id
            self._next_ping_id = self._next_ping_id + 2 if self._next_ping_id < MAX_31BIT else 2
        if ping_id % 2 or not 0 < ping_id <= 0xFFFFFFFF:
            raise ValueError("a server's PING IDs are even and fit 32 bits")
        self._pings_sent.add(ping_id)
        self._queue(Ping(ping_id))
        return ping_id

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """GOAWAY: we take no new streams; the open ones may finish. Sent once."""
        self._check_open()
        if not self._goaway_sent:
            self._goaway_sent = True
            self._queue(GoAwayFrame(self._last_peer_stream_id, status))

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The caller consumed ``n`` received bytes of the stream. Once half a window is
        consumed, WINDOW_UPDATE lets the peer send that much more: a caller that reads slowly
        thus holds the peer back. Acknowledge every ``DataReceived``, even of a stream since
        closed or reset (as h2 has it): the bytes then free the connection window only."""
        if n < 0:
            raise ValueError("cannot acknowledge a negative number of bytes")
        if self._terminated or not self._flow_control:
            return
        outstanding = self._conn_window - self._conn_recv_window - self._conn_unannounced
        if n > outstanding:
            raise ValueError(f"acknowledging {n} bytes, {outstanding} received unacknowledged")
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.unannounced += min(n, DEFAULT_WINDOW - stream.recv_window - stream.unannounced)
            if stream.unannounced >= DEFAULT_WINDOW // 2 and not stream.remote_closed:
                self._queue(WindowUpdate(stream_id, stream.unannounced))
                stream.recv_window += stream.unannounced
                stream.unannounced = 0
        self._credit_connection(n)

    # -- helpers -------------------------------------------------------------------------

    def _credit_connection(self, n: int) -> None:
        if not self._flow_control or self._terminated or n <= 0:
            return
        self._conn_unannounced += n
        if self._conn_unannounced >= self._conn_window // 2:
            self._queue(WindowUpdate(0, self._conn_unannounced))
            self._conn_recv_window += self._conn_unannounced
            self._conn_unannounced = 0

    def _queue(self, frame: Frame) -> None:
        self._out += serialize(frame)

    def _check_open(self) -> None:
        if self._terminated:
            raise ConnectionClosedError("the SPDY connection has ended")

    def _sending_stream(self, stream_id: int) -> _Stream:
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(stream_id, "is not open (never opened, reset or closed)")
        if stream.local_closed:
            raise StreamClosedError(stream_id, "is closed for sending (FIN sent or unidirectional)")
        return stream

    def _replied_stream(self, stream_id: int) -> _Stream:
        stream = self._sending_stream(stream_id)
        if not stream.replied:
            raise SpdyError(f"SPDY stream {stream_id} needs its SYN_REPLY first")
        return stream

    def _close_local(self, stream: _Stream) -> None:
        stream.local_closed = True
        self._forget_if_closed(stream.stream_id)

    def _close_remote(self, stream: _Stream) -> None:
        stream.remote_closed = True
        self._forget_if_closed(stream.stream_id)

    def _forget_if_closed(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.local_closed and stream.remote_closed:
            del self._streams[stream_id]
