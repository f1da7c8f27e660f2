"""The SPDY/3.1 server state machine (``vk_trio.kubelet.spdy``) against a peer written here.

The peer is independent of the module: it builds frames with ``struct`` from the spec's
layout, header blocks as spdystream writes them (names lowercased, values NUL-joined), and
compresses them with its own zlib stream and the dictionary, whose bytes are pinned by the
checksum of the spec's table (taken from spdystream's dictionary.go). So a wrong dictionary,
flush mode or byte layout in the module fails here rather than against an API server.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable

import pytest

from vk_trio.kubelet.spdy import (
    DEFAULT_WINDOW,
    SPDY3_DICTIONARY,
    ConnectionClosedError,
    ConnectionTerminated,
    Data,
    DataReceived,
    Event,
    Frame,
    FrameReader,
    GoAway,
    GoAwayFrame,
    GoAwayStatus,
    HeadersFrame,
    HeadersReceived,
    Ping,
    PingAcknowledged,
    PingReceived,
    RstStatus,
    RstStream,
    Setting,
    SettingId,
    Settings,
    SettingsReceived,
    SpdyConnection,
    SpdyError,
    StreamClosedError,
    StreamOpened,
    StreamReset,
    SynReply,
    SynStream,
    UnknownControl,
    WindowUpdate,
    WindowUpdated,
    parse_frame,
    serialize,
)

# --- the independent peer --------------------------------------------------------------


def control(frame_type: int, flags: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, frame_type, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, (int(fin) << 24) | len(data)) + data


def raw_block(headers: dict[str, list[str]]) -> bytes:
    """A header block as spdystream's writeHeaderValueBlock lays it out."""
    out = struct.pack(">I", len(headers))
    for name, values in headers.items():
        value = "\x00".join(values).encode()
        out += struct.pack(">I", len(name)) + name.lower().encode()
        out += struct.pack(">I", len(value)) + value
    return out


class Peer:
    """The API server's end: its own deflate stream (one per connection, sync flush per
    block, as Go's zlib writer Flush does) and its own inflate stream for our replies."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)

    def block(self, headers: dict[str, list[str]]) -> bytes:
        return self.deflate.compress(raw_block(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(
        self, sid: int, headers: dict[str, list[str]], fin: bool = False, uni: bool = False
    ) -> bytes:
        flags = int(fin) | (int(uni) << 1)
        return control(1, flags, struct.pack(">IIBB", sid, 0, 0, 0) + self.block(headers))

    def headers(self, sid: int, headers: dict[str, list[str]], fin: bool = False) -> bytes:
        return control(8, int(fin), struct.pack(">I", sid) + self.block(headers))


def rst(sid: int, status: int) -> bytes:
    return control(3, 0, struct.pack(">II", sid, status))


def window_update(sid: int, delta: int) -> bytes:
    return control(9, 0, struct.pack(">II", sid, delta))


def settings(*pairs: tuple[int, int]) -> bytes:
    body = struct.pack(">I", len(pairs)) + b"".join(struct.pack(">II", i, v) for i, v in pairs)
    return control(4, 0, body)


def ping(ping_id: int) -> bytes:
    return control(6, 0, struct.pack(">I", ping_id))


def goaway(last: int, status: int) -> bytes:
    return control(7, 0, struct.pack(">II", last, status))


def frames_of(wire: bytes) -> list[Frame]:
    reader = FrameReader()
    reader.feed(wire)
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    assert reader.pending == 0
    return out


def sent(conn: SpdyConnection) -> list[Frame]:
    return frames_of(conn.data_to_send())


EXEC_STREAMS = [
    (1, {"Streamtype": ["error"]}),
    (3, {"Streamtype": ["stdout"]}),
    (5, {"Streamtype": ["stdin"]}),
]


def opened(
    peer: Peer, conn: SpdyConnection, sid: int = 1, streamtype: str = "stdout"
) -> list[Event]:
    events = conn.receive_data(peer.syn_stream(sid, {"streamType": [streamtype]}))
    conn.reply(sid, [])
    conn.data_to_send()
    return events


@pytest.fixture
def peer() -> Peer:
    return Peer()


@pytest.fixture
def conn() -> SpdyConnection:
    return SpdyConnection()


# --- frames ----------------------------------------------------------------------------


def test_the_dictionary_is_the_specs_byte_for_byte() -> None:
    # Pinned from the spec's table (spdystream's spdy/dictionary.go): 1423 bytes.
    assert len(SPDY3_DICTIONARY) == 1423
    assert zlib.adler32(SPDY3_DICTIONARY) == 0xE3C6A7C2
    assert hashlib.sha256(SPDY3_DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


ROUND_TRIPS: list[Frame] = [
    SynStream(7, b"blk", associated_stream_id=3, priority=5, slot=2, fin=True, unidirectional=True),
    SynStream(1, b""),
    SynReply(9, b"reply-block", fin=True),
    RstStream(5, RstStatus.FLOW_CONTROL_ERROR),
    Settings((Setting(SettingId.INITIAL_WINDOW_SIZE, 1 << 20, flags=1), Setting(4, 100))),
    Settings((), clear_settings=True),
    Ping(0xFFFFFFFF),
    GoAwayFrame(41, GoAwayStatus.INTERNAL_ERROR),
    HeadersFrame(3, b"h", fin=True),
    WindowUpdate(0, (1 << 31) - 1),
    Data(0x7FFFFFFF, b"x" * 70000, fin=True),
    Data(1, b""),
    UnknownControl(10, 0x01, b"credential"),
]


@pytest.mark.parametrize("frame", ROUND_TRIPS, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips(frame: Frame) -> None:
    wire = serialize(frame)
    assert parse_frame(wire[:8], wire[8:]) == frame
    assert frames_of(wire) == [frame]


SPEC_LAYOUTS = [
    (RstStream(1, RstStatus.CANCEL), "80030003 00000008 00000001 00000005"),
    (Ping(7), "80030006 00000004 00000007"),
    (WindowUpdate(3, 0x1000), "80030009 00000008 00000003 00001000"),
    (GoAwayFrame(5, GoAwayStatus.OK), "80030007 00000008 00000005 00000000"),
    (Data(5, b"ab", fin=True), "00000005 01000002 6162"),
    (SynReply(1, b"\xaa", fin=True), "80030002 01000005 00000001 aa"),
    (
        SynStream(3, b"", priority=7, unidirectional=True),
        "80030001 0200000a 00000003 00000000 e000",
    ),
    (Settings((Setting(7, 0x10000, flags=2),)), "80030004 0000000c 00000001 02000007 00010000"),
]


@pytest.mark.parametrize("frame,hexbytes", SPEC_LAYOUTS, ids=lambda v: type(v).__name__)
def test_frames_are_laid_out_as_the_spec_draws_them(frame: Frame, hexbytes: str) -> None:
    assert serialize(frame) == bytes.fromhex(hexbytes.replace(" ", ""))


# --- header blocks ---------------------------------------------------------------------


def test_a_kubectl_exec_syn_stream_is_decoded(peer: Peer, conn: SpdyConnection) -> None:
    # Kubernetes sets "streamType" on a Go http.Header (so "Streamtype") and spdystream
    # lowercases names on the wire: "streamtype" is what arrives.
    events: list[Event] = []
    for sid, headers in EXEC_STREAMS:
        events += conn.receive_data(peer.syn_stream(sid, headers))
    assert events == [
        StreamOpened(1, (("streamtype", "error"),)),
        StreamOpened(3, (("streamtype", "stdout"),)),
        StreamOpened(5, (("streamtype", "stdin"),)),
    ]
    first = events[0]
    assert isinstance(first, StreamOpened)
    assert first.header("streamType") == first.header("streamtype") == "error"
    assert first.header("port") is None


def test_port_forward_headers_and_multiple_values(peer: Peer, conn: SpdyConnection) -> None:
    wire = peer.syn_stream(
        1, {"Streamtype": ["data"], "Port": ["8080"], "Requestid": ["0"], "X-Many": ["a", "b"]}
    )
    (event,) = conn.receive_data(wire)
    assert isinstance(event, StreamOpened)
    assert event.headers == (
        ("streamtype", "data"),
        ("port", "8080"),
        ("requestid", "0"),
        ("x-many", "a"),
        ("x-many", "b"),
    )


def test_uppercase_names_from_a_careless_peer_are_lowercased(conn: SpdyConnection) -> None:
    block = struct.pack(">II", 1, 10) + b"StreamType" + struct.pack(">I", 5) + b"error"
    deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    compressed = deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    (event,) = conn.receive_data(control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + compressed))
    assert isinstance(event, StreamOpened) and event.header("streamtype") == "error"


def test_our_header_blocks_inflate_with_an_independent_decoder(
    peer: Peer, conn: SpdyConnection
) -> None:
    for sid, headers in EXEC_STREAMS:
        conn.receive_data(peer.syn_stream(sid, headers))
    conn.reply(1, [("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
    conn.reply(3, [("a", "1"), ("a", "2"), ("b", "")], fin=True)
    replies = sent(conn)
    assert [type(f) for f in replies] == [SynReply, SynReply]
    first = replies[0]
    assert isinstance(first, SynReply)
    # The zlib header names the dictionary by its Adler-32: FDICT set, DICTID the spec's.
    assert first.header_block[1] & 0x20
    assert first.header_block[2:6] == (0xE3C6A7C2).to_bytes(4, "big")
    # Each block inflates fully on arrival (sync flush), the second in the first's context.
    inflated = [peer.inflate.decompress(f.header_block) for f in replies]  # type: ignore[union-attr]
    assert inflated == [
        raw_block({"x-stream-protocol-version": ["v4.channel.k8s.io"]}),
        raw_block({"a": ["1", "2"], "b": [""]}),
    ]
    assert replies[1] == SynReply(3, replies[1].header_block, fin=True)  # type: ignore[union-attr]


# --- framing at every byte boundary --------------------------------------------------


def a_conversation() -> bytes:
    peer = Peer()
    return b"".join(
        [
            settings((SettingId.INITIAL_WINDOW_SIZE, 32768), (SettingId.MAX_CONCURRENT_STREAMS, 9)),
            peer.syn_stream(1, {"streamtype": ["error"]}),
            peer.syn_stream(3, {"streamtype": ["stdin"]}),
            data_frame(3, b"hello "),
            ping(1),
            peer.headers(3, {"x-extra": ["yes"]}),
            data_frame(3, b"world", fin=True),
            control(10, 0, b"ignored credential"),
            window_update(1, 100),
            window_update(0, 200),
            rst(1, RstStatus.CANCEL),
            goaway(3, GoAwayStatus.OK),
        ]
    )


def run(chunks: Iterable[bytes]) -> tuple[list[Event], bytes]:
    conn = SpdyConnection()
    events: list[Event] = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
    return events, conn.data_to_send()


def test_a_conversation_decodes_the_same_however_it_is_split() -> None:
    wire = a_conversation()
    whole_events, whole_out = run([wire])
    assert [type(e) for e in whole_events] == [
        SettingsReceived,
        StreamOpened,
        StreamOpened,
        DataReceived,
        PingReceived,
        HeadersReceived,
        DataReceived,
        WindowUpdated,
        WindowUpdated,
        StreamReset,
        GoAway,
    ]
    assert whole_events[6] == DataReceived(3, b"world", fin=True)
    assert frames_of(whole_out) == [Ping(1)]
    assert run([wire[i : i + 1] for i in range(len(wire))]) == (whole_events, whole_out)
    for cut in range(1, len(wire)):
        assert run([wire[:cut], wire[cut:]]) == (whole_events, whole_out), cut


# --- session errors --------------------------------------------------------------------


def _bad_zlib(peer: Peer) -> bytes:
    return control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"\x78\xbbnot zlib at all")


def _wrong_dictionary(peer: Peer) -> bytes:
    deflate = zlib.compressobj(zdict=b"some other dictionary")
    block = deflate.compress(raw_block({"a": ["b"]})) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block)


def _count_too_large(peer: Peer) -> bytes:
    deflate = peer.deflate
    block = deflate.compress(struct.pack(">I", 1000) + b"\x00" * 8)
    return control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block + deflate.flush(2))


def _repeated_name(peer: Peer) -> bytes:
    raw = struct.pack(">I", 2) + (struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"b") * 2
    block = peer.deflate.compress(raw) + peer.deflate.flush(zlib.Z_SYNC_FLUSH)
    return control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block)


def _bomb(peer: Peer) -> bytes:
    raw = struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 1 << 20) + b"z" * (1 << 20)
    block = peer.deflate.compress(raw) + peer.deflate.flush(zlib.Z_SYNC_FLUSH)
    return control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + block)


SESSION_ERRORS = {
    "garbage-zlib": _bad_zlib,
    "wrong-dictionary": _wrong_dictionary,
    "pair-count-beyond-block": _count_too_large,
    "repeated-name": _repeated_name,
    "inflates-past-limit": _bomb,
    "short-rst-stream": lambda p: control(3, 0, b"\x00\x00\x00\x01"),
    "spdy-2-frame": lambda p: control(6, 0, b"\x00\x00\x00\x01", version=2),
    "syn-stream-0": lambda p: p.syn_stream(0, {"a": ["b"]}),
    "data-on-stream-0": lambda p: data_frame(0, b"x"),
    "syn-stream-id-goes-back": lambda p: p.syn_stream(5, {}) + p.syn_stream(3, {}),
}


@pytest.mark.parametrize("build", SESSION_ERRORS.values(), ids=SESSION_ERRORS.keys())
def test_a_session_error_ends_the_connection_with_goaway(peer: Peer, build: object) -> None:
    conn = SpdyConnection()
    wire = build(peer)  # type: ignore[operator]
    events = conn.receive_data(wire + ping(1))  # nothing after the error is handled
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].status == GoAwayStatus.PROTOCOL_ERROR
    assert not any(isinstance(e, PingReceived) for e in events)
    out = sent(conn)
    assert isinstance(out[-1], GoAwayFrame) and out[-1].status == GoAwayStatus.PROTOCOL_ERROR
    assert conn.receive_data(ping(3)) == [] and conn.data_to_send() == b""
    with pytest.raises(ConnectionClosedError):
        conn.reply(1, [])
    with pytest.raises(ConnectionClosedError):
        conn.ping()


def test_the_peer_closing_ends_the_connection(peer: Peer, conn: SpdyConnection) -> None:
    assert conn.receive_data(b"") == [ConnectionTerminated(0, "peer closed the connection")]
    other = SpdyConnection()
    other.receive_data(ping(1)[:5])
    (ended,) = other.receive_data(b"")
    assert isinstance(ended, ConnectionTerminated) and ended.status == 1
    assert other.data_to_send() == b""  # nobody to tell


# --- stream errors and resets ----------------------------------------------------------


def test_a_stream_reset_by_the_peer_mid_transfer(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    assert conn.send_data(1, b"x" * 1000) == 1000
    assert conn.receive_data(rst(1, RstStatus.CANCEL)) == [StreamReset(1, RstStatus.CANCEL)]
    with pytest.raises(StreamClosedError, match="stream 1"):
        conn.send_data(1, b"more")
    with pytest.raises(StreamClosedError):
        conn.end_stream(1)
    # DATA already in flight on it: the stream is not open, so INVALID_STREAM (§2.4.2) ...
    assert conn.receive_data(data_frame(1, b"late")) == []
    assert sent(conn)[-1] == RstStream(1, RstStatus.INVALID_STREAM)
    # ... but an RST_STREAM is never answered with one.
    assert conn.receive_data(rst(1, RstStatus.CANCEL)) == []
    assert conn.data_to_send() == b""


def test_a_stream_we_reset(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    conn.reset_stream(1, RstStatus.INTERNAL_ERROR)
    assert sent(conn) == [RstStream(1, RstStatus.INTERNAL_ERROR)]
    with pytest.raises(StreamClosedError):
        conn.send_data(1, b"x")
    with pytest.raises(StreamClosedError):
        conn.reset_stream(1)
    assert conn.receive_data(data_frame(1, b"in flight")) == []
    assert sent(conn) == [RstStream(1, RstStatus.INVALID_STREAM)]


def test_data_after_the_peers_fin_is_stream_already_closed(
    peer: Peer, conn: SpdyConnection
) -> None:
    opened(peer, conn, 1)
    assert conn.receive_data(data_frame(1, b"end", fin=True)) == [DataReceived(1, b"end", True)]
    assert conn.receive_data(data_frame(1, b"more")) == [
        StreamReset(1, RstStatus.STREAM_ALREADY_CLOSED, remote_reset=False)
    ]
    assert sent(conn) == [RstStream(1, RstStatus.STREAM_ALREADY_CLOSED)]


def test_data_on_a_stream_never_opened_is_invalid_stream(conn: SpdyConnection) -> None:
    assert conn.receive_data(data_frame(7, b"?")) == []
    assert sent(conn) == [RstStream(7, RstStatus.INVALID_STREAM)]


@pytest.mark.parametrize(
    "second,expected_events",
    [
        pytest.param(1, [StreamReset(1, RstStatus.PROTOCOL_ERROR, False)], id="repeated-id"),
        pytest.param(4, [], id="even-id-from-the-client"),
    ],
)
def test_bad_syn_stream_ids_are_refused(
    peer: Peer, conn: SpdyConnection, second: int, expected_events: list[Event]
) -> None:
    conn.receive_data(peer.syn_stream(1, {"streamtype": ["error"]}))
    assert conn.receive_data(peer.syn_stream(second, {"streamtype": ["x"]})) == expected_events
    assert sent(conn) == [RstStream(second, RstStatus.PROTOCOL_ERROR)]
    # The refused block was still inflated: the next one decodes in step.
    (event,) = conn.receive_data(peer.syn_stream(5, {"streamtype": ["stdout"]}))
    assert event == StreamOpened(5, (("streamtype", "stdout"),))


def test_a_syn_reply_from_the_peer_is_refused(peer: Peer, conn: SpdyConnection) -> None:
    wire = control(2, 0, struct.pack(">I", 9) + peer.block({"a": ["b"]}))
    assert conn.receive_data(wire) == []
    assert sent(conn) == [RstStream(9, RstStatus.INVALID_STREAM)]


def test_calls_out_of_order_raise(peer: Peer, conn: SpdyConnection) -> None:
    conn.receive_data(peer.syn_stream(1, {}) + peer.syn_stream(3, {}, uni=True))
    with pytest.raises(SpdyError, match="SYN_REPLY first"):
        conn.send_data(1, b"x")
    with pytest.raises(ValueError, match="NUL"):
        conn.reply(1, [("a", "b\x00c")])
    conn.reply(1, [])
    with pytest.raises(SpdyError, match="already"):
        conn.reply(1, [])
    conn.end_stream(1)
    assert sent(conn)[-1] == Data(1, b"", fin=True)
    with pytest.raises(StreamClosedError):
        conn.send_data(1, b"x")
    with pytest.raises(StreamClosedError, match="unidirectional"):
        conn.reply(3, [])
    with pytest.raises(StreamClosedError):
        conn.send_data(99, b"x")


def test_a_stream_closed_both_ways_is_forgotten(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    conn.receive_data(data_frame(1, b"", fin=True))
    assert conn.send_data(1, b"bye", fin=True) == 3
    assert sent(conn) == [Data(1, b"bye", fin=True)]
    conn.receive_data(data_frame(1, b"x"))
    assert sent(conn) == [RstStream(1, RstStatus.INVALID_STREAM)]


# --- flow control ----------------------------------------------------------------------


def test_a_peer_that_never_reads_stops_us_at_the_window(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    payload = b"y" * 100_000
    assert conn.send_window(1) == DEFAULT_WINDOW
    assert conn.send_data(1, payload, fin=True) == DEFAULT_WINDOW
    out = sent(conn)
    assert sum(len(f.data) for f in out if isinstance(f, Data)) == DEFAULT_WINDOW
    assert not any(isinstance(f, Data) and f.fin for f in out)  # no FIN with a partial send
    assert conn.send_window(1) == 0 and conn.send_data(1, payload[DEFAULT_WINDOW:]) == 0
    assert conn.data_to_send() == b""
    # The stream's window opens, the connection's does not yet: still blocked.
    assert conn.receive_data(window_update(1, 50_000)) == [WindowUpdated(1, 50_000)]
    assert conn.send_data(1, payload[DEFAULT_WINDOW:]) == 0
    assert conn.receive_data(window_update(0, 10_000)) == [WindowUpdated(0, 10_000)]
    assert conn.send_data(1, payload[DEFAULT_WINDOW:], fin=True) == 10_000
    conn.receive_data(window_update(0, 1 << 20))
    rest = payload[DEFAULT_WINDOW + 10_000 :]
    assert conn.send_data(1, rest, fin=True) == len(rest)
    out = sent(conn)
    assert b"".join(f.data for f in out if isinstance(f, Data)) == payload[DEFAULT_WINDOW:]
    assert isinstance(out[-1], Data) and out[-1].fin


def test_a_peer_beyond_the_stream_window_is_reset(peer: Peer) -> None:
    conn = SpdyConnection(connection_window=1 << 20)
    assert sent(conn) == [WindowUpdate(0, (1 << 20) - DEFAULT_WINDOW)]
    opened(peer, conn, 1)
    opened(peer, conn, 3)
    assert conn.receive_data(data_frame(1, b"a" * DEFAULT_WINDOW)) == [
        DataReceived(1, b"a" * DEFAULT_WINDOW)
    ]
    assert conn.receive_data(data_frame(1, b"!")) == [
        StreamReset(1, RstStatus.FLOW_CONTROL_ERROR, remote_reset=False)
    ]
    assert sent(conn) == [RstStream(1, RstStatus.FLOW_CONTROL_ERROR)]
    # The other stream is untouched.
    assert conn.receive_data(data_frame(3, b"ok")) == [DataReceived(3, b"ok")]


def test_a_peer_beyond_the_connection_window_ends_it(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    opened(peer, conn, 3)
    conn.receive_data(data_frame(1, b"a" * 40_000))
    (ended,) = conn.receive_data(data_frame(3, b"b" * 40_000))
    assert isinstance(ended, ConnectionTerminated)
    assert sent(conn) == [GoAwayFrame(3, GoAwayStatus.PROTOCOL_ERROR)]


def test_acknowledging_what_was_read_reopens_the_peers_window(
    peer: Peer, conn: SpdyConnection
) -> None:
    opened(peer, conn, 1)
    conn.receive_data(data_frame(1, b"a" * DEFAULT_WINDOW))
    conn.acknowledge(1, 20_000)
    assert conn.data_to_send() == b""  # under half a window: nothing yet
    conn.acknowledge(1, 20_000)
    assert sent(conn) == [WindowUpdate(1, 40_000), WindowUpdate(0, 40_000)]
    with pytest.raises(ValueError, match="unacknowledged"):
        conn.acknowledge(1, 30_000)
    # Now 40 000 more fit, and no more (the connection's window is as full as the stream's).
    assert conn.receive_data(data_frame(1, b"b" * 40_000)) == [DataReceived(1, b"b" * 40_000)]
    (ended,) = conn.receive_data(data_frame(1, b"c"))
    assert isinstance(ended, ConnectionTerminated) and "connection window" in ended.reason


def test_bytes_of_a_reset_stream_still_free_the_connection(
    peer: Peer, conn: SpdyConnection
) -> None:
    opened(peer, conn, 1)
    conn.receive_data(data_frame(1, b"a" * 50_000))
    conn.receive_data(rst(1, RstStatus.CANCEL))
    conn.acknowledge(1, 50_000)
    assert sent(conn) == [WindowUpdate(0, 50_000)]


def test_settings_move_the_windows_of_open_streams(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    conn.receive_data(window_update(0, 1 << 20))
    assert conn.send_data(1, b"z" * 60_000) == 60_000
    (event,) = conn.receive_data(settings((SettingId.INITIAL_WINDOW_SIZE, 16_384)))
    assert event == SettingsReceived({SettingId.INITIAL_WINDOW_SIZE: 16_384})
    assert conn.send_window(1) == 0  # 5 536 + (16 384 - 65 536) is below zero
    opened(peer, conn, 3)
    assert conn.send_window(3) == 16_384
    conn.receive_data(settings((SettingId.INITIAL_WINDOW_SIZE, 131_072)))
    assert conn.send_window(1) == 131_072 - 60_000
    assert conn.send_window(3) == 131_072


def test_without_peer_flow_control_nothing_is_held_back(peer: Peer) -> None:
    # spdystream (Kubernetes) neither sends nor heeds WINDOW_UPDATE.
    conn = SpdyConnection(peer_flow_control=False)
    opened(peer, conn, 1)
    assert conn.send_data(1, b"q" * 300_000) == 300_000
    events = conn.receive_data(data_frame(1, b"r" * 200_000) + data_frame(1, b"s" * 100_000))
    assert [len(e.data) for e in events if isinstance(e, DataReceived)] == [200_000, 100_000]
    conn.acknowledge(1, 300_000)
    out = sent(conn)
    assert not any(isinstance(f, WindowUpdate | RstStream) for f in out)
    assert sum(len(f.data) for f in out if isinstance(f, Data)) == 300_000


# --- PING, GOAWAY ----------------------------------------------------------------------


def test_ping_is_echoed_and_ours_are_acknowledged(conn: SpdyConnection) -> None:
    assert conn.receive_data(ping(5)) == [PingReceived(5)]
    assert sent(conn) == [Ping(5)]
    ours = conn.ping()
    assert ours % 2 == 0 and sent(conn) == [Ping(ours)]
    assert conn.receive_data(ping(ours)) == [PingAcknowledged(ours)]
    assert conn.receive_data(ping(ours + 2)) == []  # an even ID we never sent: ignored
    assert conn.data_to_send() == b""
    with pytest.raises(ValueError):
        conn.ping(3)


def test_goaway_both_ways(peer: Peer, conn: SpdyConnection) -> None:
    opened(peer, conn, 1)
    assert conn.receive_data(goaway(1, GoAwayStatus.OK)) == [GoAway(1, GoAwayStatus.OK)]
    conn.goaway()
    conn.goaway()  # once only
    assert sent(conn) == [GoAwayFrame(1, GoAwayStatus.OK)]
    # After our GOAWAY a new stream is ignored, but its block is inflated to stay in step.
    assert conn.receive_data(peer.syn_stream(3, {"streamtype": ["late"]})) == []
    assert conn.receive_data(peer.headers(1, {"x": ["y"]}, fin=True)) == [
        HeadersReceived(1, (("x", "y"),), fin=True)
    ]
    assert conn.send_data(1, b"finishing", fin=True) == 9  # open streams may finish
    assert conn.receive_data(data_frame(9, b"?")) == []  # no RST after our GOAWAY
    assert sent(conn) == [Data(1, b"finishing", fin=True)]
