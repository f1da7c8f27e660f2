"""SPDY/3.1 frames: the 8-byte common header, each frame type's payload, and an incremental
parser that turns whatever bytes have arrived into whole frames.

Header blocks stay compressed here: decompressing them needs the connection's one zlib
context (``_headers``), so a frame only carries its block's bytes and the connection decodes
them in arrival order. That also keeps every frame type round-trippable on its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

SPDY_VERSION = 3
#: The frame length field is 24 bits.
MAX_FRAME_LENGTH = (1 << 24) - 1
#: Stream IDs, window sizes and deltas are 31-bit.
MAX_31BIT = (1 << 31) - 1
FRAME_HEADER_LENGTH = 8

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01


class FrameType(IntEnum):
    """Control frame types (SPDY/3 §2.6); 5 (NOOP) is gone and 10 (CREDENTIAL) is ignored."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    """RST_STREAM status codes (SPDY/3 §2.6.3)."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    """GOAWAY status codes (SPDY/3 §2.6.6)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(IntEnum):
    """SETTINGS IDs (SPDY/3 §2.6.4); only INITIAL_WINDOW_SIZE changes what we do."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class FrameError(Exception):
    """A frame that cannot be parsed: its fixed layout is wrong, so the byte stream can no
    longer be trusted and the connection must end (a session error, SPDY/3 §2.4.1)."""


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    header_block: bytes
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    header_block: bytes
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    entries: tuple[Setting, ...]
    clear_settings: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    header_block: bytes
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class UnknownControl:
    """A control frame of a type this version does not define: the spec says to ignore it,
    but the parser still hands it over so that ignoring is the connection's visible choice."""

    frame_type: int
    flags: int
    payload: bytes


Frame = (
    SynStream
    | SynReply
    | RstStream
    | Settings
    | Ping
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdate
    | Data
    | UnknownControl
)

_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")


def _flag(on: bool, flag: int) -> int:
    return flag if on else 0


def _syn_stream_payload(f: SynStream) -> tuple[int, int, bytes]:
    head = struct.pack(
        ">IIBB",
        f.stream_id & MAX_31BIT,
        f.associated_stream_id & MAX_31BIT,
        f.priority << 5,
        f.slot,
    )
    flags = _flag(f.fin, FLAG_FIN) | _flag(f.unidirectional, FLAG_UNIDIRECTIONAL)
    return FrameType.SYN_STREAM, flags, head + f.header_block


def _syn_reply_payload(f: SynReply) -> tuple[int, int, bytes]:
    payload = _U32.pack(f.stream_id & MAX_31BIT) + f.header_block
    return FrameType.SYN_REPLY, _flag(f.fin, FLAG_FIN), payload


def _rst_payload(f: RstStream) -> tuple[int, int, bytes]:
    return FrameType.RST_STREAM, 0, _TWO_U32.pack(f.stream_id & MAX_31BIT, f.status)


def _settings_payload(f: Settings) -> tuple[int, int, bytes]:
    parts = [_U32.pack(len(f.entries))]
    parts += [_TWO_U32.pack((e.flags << 24) | (e.id & 0xFFFFFF), e.value) for e in f.entries]
    flags = _flag(f.clear_settings, FLAG_SETTINGS_CLEAR_SETTINGS)
    return FrameType.SETTINGS, flags, b"".join(parts)


def _ping_payload(f: Ping) -> tuple[int, int, bytes]:
    return FrameType.PING, 0, _U32.pack(f.ping_id)


def _goaway_payload(f: GoAwayFrame) -> tuple[int, int, bytes]:
    return FrameType.GOAWAY, 0, _TWO_U32.pack(f.last_good_stream_id & MAX_31BIT, f.status)


def _headers_payload(f: HeadersFrame) -> tuple[int, int, bytes]:
    payload = _U32.pack(f.stream_id & MAX_31BIT) + f.header_block
    return FrameType.HEADERS, _flag(f.fin, FLAG_FIN), payload


def _window_update_payload(f: WindowUpdate) -> tuple[int, int, bytes]:
    return FrameType.WINDOW_UPDATE, 0, _TWO_U32.pack(f.stream_id & MAX_31BIT, f.delta & MAX_31BIT)


def _unknown_payload(f: UnknownControl) -> tuple[int, int, bytes]:
    return f.frame_type, f.flags, f.payload


_PAYLOADS: dict[type, Callable[[Frame], tuple[int, int, bytes]]] = {
    SynStream: _syn_stream_payload,  # type: ignore[dict-item]
    SynReply: _syn_reply_payload,  # type: ignore[dict-item]
    RstStream: _rst_payload,  # type: ignore[dict-item]
    Settings: _settings_payload,  # type: ignore[dict-item]
    Ping: _ping_payload,  # type: ignore[dict-item]
    GoAwayFrame: _goaway_payload,  # type: ignore[dict-item]
    HeadersFrame: _headers_payload,  # type: ignore[dict-item]
    WindowUpdate: _window_update_payload,  # type: ignore[dict-item]
    UnknownControl: _unknown_payload,  # type: ignore[dict-item]
}


def serialize(frame: Frame) -> bytes:
    """The wire bytes of one frame. A payload longer than 24 bits can hold is the caller's
    bug (the connection splits DATA well below it), so it raises ValueError."""
    if isinstance(frame, Data):
        flags, payload = _flag(frame.fin, FLAG_FIN), frame.data
        first = frame.stream_id & MAX_31BIT
    else:
        frame_type, flags, payload = _PAYLOADS[type(frame)](frame)
        first = 0x80000000 | (SPDY_VERSION << 16) | frame_type
    if len(payload) > MAX_FRAME_LENGTH:
        raise ValueError(f"a SPDY frame holds at most {MAX_FRAME_LENGTH} bytes")
    return _TWO_U32.pack(first, (flags << 24) | len(payload)) + payload


def _need(payload: bytes, length: int, name: str, exact: bool = True) -> None:
    if len(payload) < length or (exact and len(payload) != length):
        raise FrameError(f"{name} frame has a {len(payload)}-byte payload")


def _parse_syn_stream(flags: int, payload: bytes) -> Frame:
    _need(payload, 10, "SYN_STREAM", exact=False)
    stream_id, assoc, pri, slot = struct.unpack_from(">IIBB", payload)
    return SynStream(
        stream_id=stream_id & MAX_31BIT,
        associated_stream_id=assoc & MAX_31BIT,
        priority=pri >> 5,
        slot=slot,
        header_block=payload[10:],
        fin=bool(flags & FLAG_FIN),
        unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
    )


def _parse_syn_reply(flags: int, payload: bytes) -> Frame:
    _need(payload, 4, "SYN_REPLY", exact=False)
    (stream_id,) = _U32.unpack_from(payload)
    return SynReply(stream_id & MAX_31BIT, payload[4:], fin=bool(flags & FLAG_FIN))


def _parse_rst(flags: int, payload: bytes) -> Frame:
    _need(payload, 8, "RST_STREAM")
    stream_id, status = _TWO_U32.unpack(payload)
    return RstStream(stream_id & MAX_31BIT, status)


def _parse_settings(flags: int, payload: bytes) -> Frame:
    _need(payload, 4, "SETTINGS", exact=False)
    (count,) = _U32.unpack_from(payload)
    _need(payload, 4 + 8 * count, "SETTINGS")
    entries = []
    for offset in range(4, 4 + 8 * count, 8):
        flags_id, value = _TWO_U32.unpack_from(payload, offset)
        entries.append(Setting(id=flags_id & 0xFFFFFF, value=value, flags=flags_id >> 24))
    return Settings(tuple(entries), clear_settings=bool(flags & FLAG_SETTINGS_CLEAR_SETTINGS))


def _parse_ping(flags: int, payload: bytes) -> Frame:
    _need(payload, 4, "PING")
    return Ping(_U32.unpack(payload)[0])


def _parse_goaway(flags: int, payload: bytes) -> Frame:
    _need(payload, 8, "GOAWAY")
    last, status = _TWO_U32.unpack(payload)
    return GoAwayFrame(last & MAX_31BIT, status)


def _parse_headers(flags: int, payload: bytes) -> Frame:
    _need(payload, 4, "HEADERS", exact=False)
    (stream_id,) = _U32.unpack_from(payload)
    return HeadersFrame(stream_id & MAX_31BIT, payload[4:], fin=bool(flags & FLAG_FIN))


def _parse_window_update(flags: int, payload: bytes) -> Frame:
    _need(payload, 8, "WINDOW_UPDATE")
    stream_id, delta = _TWO_U32.unpack(payload)
    return WindowUpdate(stream_id & MAX_31BIT, delta & MAX_31BIT)


_PARSERS: dict[int, Callable[[int, bytes], Frame]] = {
    FrameType.SYN_STREAM: _parse_syn_stream,
    FrameType.SYN_REPLY: _parse_syn_reply,
    FrameType.RST_STREAM: _parse_rst,
    FrameType.SETTINGS: _parse_settings,
    FrameType.PING: _parse_ping,
    FrameType.GOAWAY: _parse_goaway,
    FrameType.HEADERS: _parse_headers,
    FrameType.WINDOW_UPDATE: _parse_window_update,
}


def parse_frame(header: bytes, payload: bytes) -> Frame:
    """One frame from its 8-byte header and its whole payload."""
    first, flags_length = _TWO_U32.unpack(header)
    flags = flags_length >> 24
    if not first & 0x80000000:
        return Data(first & MAX_31BIT, payload, fin=bool(flags & FLAG_FIN))
    version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
    if version != SPDY_VERSION:
        # Another version's header blocks use another dictionary: nothing after this frame
        # could be decoded, so this is not something to skip.
        raise FrameError(f"control frame of SPDY version {version}, not {SPDY_VERSION}")
    parser = _PARSERS.get(frame_type)
    if parser is None:
        return UnknownControl(frame_type, flags, payload)
    return parser(flags, payload)


class FrameReader:
    """Whole frames out of a byte stream that arrives in arbitrary pieces.

    It holds at most one partial frame (≤ 16 MiB + 8 bytes, the 24-bit length) plus whatever
    the caller fed beyond it; the caller bounds that by how much it reads per call.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame: non-zero at end of input means a truncated frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive. Raises FrameError."""
        if len(self._buffer) < FRAME_HEADER_LENGTH:
            return None
        length = int.from_bytes(self._buffer[5:8], "big")
        end = FRAME_HEADER_LENGTH + length
        if len(self._buffer) < end:
            return None
        header = bytes(self._buffer[:FRAME_HEADER_LENGTH])
        payload = bytes(self._buffer[FRAME_HEADER_LENGTH:end])
        del self._buffer[:end]
        return parse_frame(header, payload)

    def clear(self) -> None:
        self._buffer.clear()
