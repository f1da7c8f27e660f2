"""The WebSocket channel protocols without I/O: tables of what the kubelet does byte by byte."""

from __future__ import annotations

import json

import pytest

from vk_trio.kubelet.streaming.websocket import protocol as p
from vk_trio.kubelet.streaming.websocket.protocol import (
    PROTOCOLS,
    CloseChannel,
    Data,
    ProtocolViolation,
    Rejection,
    Skip,
    TerminalSize,
    Tunnel,
)

V5, V4, V4B64, V1, V1B64, NONE = (PROTOCOLS[n] for n in p.REMOTECOMMAND_PROTOCOLS)


@pytest.mark.parametrize(
    ("protocol", "channel", "data", "message"),
    [
        (V5, 1, b"out", b"\x01out"),
        (V4, 0, b"", b"\x00"),
        (V1, 2, b"\xff\x00", b"\x02\xff\x00"),
        (NONE, 3, b"{}", b"\x03{}"),
        (V4B64, 1, b"foo\n", "1Zm9vCg=="),
        (V1B64, 0, b"", "0"),
        (V4B64, 11, b"x", ";eA=="),  # '0' + 11, as Go's string('0'+num)
    ],
)
def test_encode(
    protocol: p.ChannelProtocol, channel: int, data: bytes, message: bytes | str
) -> None:
    assert p.encode(protocol, channel, data) == message


@pytest.mark.parametrize(
    ("protocol", "message", "channels", "frame"),
    [
        (V5, b"\x00hello", 5, Data(0, b"hello")),
        (V5, b"\xff\x00", 5, CloseChannel(0)),
        (V5, b"\xff\x04", 5, CloseChannel(4)),
        (V4, b"\xff\x00", 5, Skip("channel 255 does not exist")),  # no CLOSE before v5
        (V4, b"", 5, Skip("empty message")),
        (V4, b"\x05x", 5, Skip("channel 5 does not exist")),
        (V4, b"\x04", 5, Data(4, b"")),
        (NONE, b"\x00\x00\x01", 2, Data(0, b"\x00\x01")),
        (V4B64, "0Zm9vCg==", 5, Data(0, b"foo\n")),
        (V4B64, b"0Zm9v\r\nCg==", 5, Data(0, b"foo\n")),  # Go skips CR/LF in base64
        (V1B64, "4eyJXaWR0aCI6MX0=", 5, Data(4, b'{"Width":1}')),
        (V1B64, "/AAAA", 5, Skip("channel -1 does not exist")),
        (V4B64, "9AAAA", 5, Skip("channel 9 does not exist")),
        (V5, "\x00text", 5, Data(0, b"text")),  # a text message on a binary protocol
    ],
)
def test_decode(
    protocol: p.ChannelProtocol, message: bytes | str, channels: int, frame: object
) -> None:
    assert p.decode(protocol, message, channels) == frame


@pytest.mark.parametrize("message", ["0Zm9", "0Zm9v!===", "0Zm9vCg"])
def test_decode_bad_base64_is_skipped(message: str) -> None:
    assert isinstance(p.decode(V4B64, message, 5), Skip)


@pytest.mark.parametrize("message", [b"\xff", b"\xff\x00\x00", b"\xff\x05"])
def test_decode_bad_close_signal_ends_the_session(message: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        p.decode(V5, message, 5)


@pytest.mark.parametrize("protocol", list(PROTOCOLS.values()))
@pytest.mark.parametrize("channel", range(10))
@pytest.mark.parametrize("data", [b"", b"a", b"\x00\xff" * 100, bytes(range(256))])
def test_round_trip(protocol: p.ChannelProtocol, channel: int, data: bytes) -> None:
    assert p.decode(protocol, p.encode(protocol, channel, data), 10) == Data(channel, data)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], ""),
        (["v5.channel.k8s.io"], "v5.channel.k8s.io"),
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], "v5.channel.k8s.io"),  # v5 wins anywhere
        (["v4.base64.channel.k8s.io", "v4.channel.k8s.io"], "v4.base64.channel.k8s.io"),
        (["base64.channel.k8s.io", "channel.k8s.io"], "base64.channel.k8s.io"),
        (["x", "channel.k8s.io"], "channel.k8s.io"),
        (["v3.channel.k8s.io"], None),
        (["SPDY/3.1+portforward.k8s.io"], None),
    ],
)
def test_select_remotecommand(offered: list[str], chosen: str | None) -> None:
    result = p.select_remotecommand(offered)
    if chosen is None:
        assert result == Rejection(403, "Forbidden")
    else:
        assert isinstance(result, p.ChannelProtocol)
        assert result.name == chosen


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], PROTOCOLS[""]),
        (["v4.channel.k8s.io"], PROTOCOLS["v4.channel.k8s.io"]),
        (["v4.base64.channel.k8s.io"], PROTOCOLS["v4.base64.channel.k8s.io"]),
        (["v5.channel.k8s.io"], Rejection(403, "Forbidden")),
        (["channel.k8s.io"], Rejection(403, "Forbidden")),
        (
            ["v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"],
            Tunnel("SPDY/3.1+portforward.k8s.io", "portforward.k8s.io"),
        ),
    ],
)
def test_select_port_forward(offered: list[str], chosen: object) -> None:
    assert p.select_port_forward(offered) == chosen


def test_select_port_forward_unknown_tunneled_protocol_is_the_spdy_refusal() -> None:
    result = p.select_port_forward(["SPDY/3.1+portforward2.k8s.io"])
    assert isinstance(result, Rejection)
    assert result.status == 403
    assert ("X-Accepted-Stream-Protocol-Versions", "portforward.k8s.io") in result.headers
    assert b"unable to negotiate protocol" in result.body


@pytest.mark.parametrize(
    ("header", "offered"),
    [
        (None, []),
        ("", []),
        ("v5.channel.k8s.io", ["v5.channel.k8s.io"]),
        (" a , b,,c ", ["a", "b", "c"]),
    ],
)
def test_offered_protocols(header: str | None, offered: list[str]) -> None:
    assert p.offered_protocols(header) == offered


GOOD = {
    "connection": "keep-alive, Upgrade",
    "upgrade": "WebSocket",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}


@pytest.mark.parametrize(
    ("method", "change", "status"),
    [
        ("GET", {}, None),
        ("POST", {}, 405),
        ("GET", {"upgrade": "h2c"}, 400),
        ("GET", {"connection": "close"}, 400),
        ("GET", {"sec-websocket-key": ""}, 400),
        ("GET", {"sec-websocket-version": "8"}, 400),
    ],
)
def test_check_upgrade(method: str, change: dict[str, str], status: int | None) -> None:
    result = p.check_upgrade(method, {**GOOD, **change})
    assert (result.status if result else None) == status


def test_accept_headers_follow_rfc6455() -> None:
    accepted = p.accept(GOOD, "v5.channel.k8s.io")
    assert dict(accepted.headers)["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert dict(accepted.headers)["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io"
    assert "Sec-WebSocket-Protocol" not in dict(p.accept(GOOD, "").headers)
    assert accepted.to_bytes().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


@pytest.mark.parametrize(
    ("values", "ports"),
    [
        (["80"], (80,)),
        (["80,443", "8080"], (80, 443, 8080)),
        (["65535"], (65535,)),
    ],
)
def test_parse_ports(values: list[str], ports: tuple[int, ...]) -> None:
    assert p.parse_ports(values) == ports


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([], "is required"),
        ([""], "cannot be empty"),
        (["0"], "must be > 0"),
        (["65536"], "unable to parse"),
        (["80,"], "unable to parse"),
        (["-1"], "unable to parse"),
        (["http"], "unable to parse"),
    ],
)
def test_parse_ports_errors(values: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        p.parse_ports(values)


@pytest.mark.parametrize(
    ("port", "prefix"), [(80, b"P\x00"), (8080, b"\x90\x1f"), (65535, b"\xff\xff")]
)
def test_port_prefix_is_little_endian(port: int, prefix: bytes) -> None:
    assert p.port_prefix(port) == prefix


@pytest.mark.parametrize(
    ("pieces", "sizes"),
    [
        ([b'{"Width":80,"Height":24}'], [TerminalSize(80, 24)]),
        ([b'{"width":1,', b'"HEIGHT":2}'], [TerminalSize(1, 2)]),
        ([b'{"Width":1}{"Height":2}\n'], [TerminalSize(1, 0), TerminalSize(0, 2)]),
        ([b'{"Wid', b'th":3,"Height":4}'], [TerminalSize(3, 4)]),
        ([b" ", b""], []),
    ],
)
def test_resize_decoder(pieces: list[bytes], sizes: list[TerminalSize]) -> None:
    decoder = p.ResizeDecoder()
    assert [s for piece in pieces for s in decoder.feed(piece)] == sizes


@pytest.mark.parametrize(
    "data", [b"[1]", b'{"Width":-1}', b'{"Width":65536}', b'{"Width":"80"}', b"{]"]
)
def test_resize_decoder_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        p.ResizeDecoder().feed(data)


def test_resize_decoder_bounds_what_it_keeps() -> None:
    decoder = p.ResizeDecoder(limit=16)
    with pytest.raises(ValueError, match="too long"):
        decoder.feed(b'{"Width": ' + b" " * 32)


FAILURE = {"status": "Failure", "message": "command terminated with non-zero exit code"}


@pytest.mark.parametrize(
    ("protocol", "status", "payload"),
    [
        (V5, {"status": "Success"}, b'{"status":"Success"}'),
        (V4, FAILURE, json.dumps(FAILURE, separators=(",", ":")).encode()),
        (V1, {"status": "Success"}, None),
        (NONE, FAILURE, b"command terminated with non-zero exit code"),
    ],
)
def test_encode_status(
    protocol: p.ChannelProtocol, status: dict[str, str], payload: bytes | None
) -> None:
    assert p.encode_status(protocol, status) == payload
