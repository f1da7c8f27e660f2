"""The Kubernetes WebSocket channel protocols, without I/O: which subprotocol a request gets,
and how a message maps to a channel and back.

Why a layer of its own: every rule here is a byte-level convention that ``kubectl``, the API
server and client libraries already agree on, and a mistake in one is a session that hangs
or loses output with no error anywhere. Pure functions can be checked against every case in
a table; the trio transport (``transport``) then only moves whole messages.

What the kubelet does, and so what this module does (read in the Kubernetes source:
``staging/src/k8s.io/streaming/pkg/httpstream/wsstream/conn.go``,
``staging/src/k8s.io/cri-streaming/pkg/streaming/remotecommand/websocket.go``,
``.../portforward/websocket.go`` and ``.../portforward/constants.go``,
``staging/src/k8s.io/apiserver/pkg/util/proxy/websocket.go`` and ``streamtunnel.go``):

- A message's first byte names its channel; with the ``base64.`` variants it is the ASCII digit
  ``'0' + channel`` and the rest is standard base64 (padded), sent by the server as a text
  message. An empty message is skipped, a channel past the session's last is skipped.
- remotecommand (exec, attach) has five channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4
  resize. The error channel carries a ``metav1.Status`` as JSON from v4 on, and before v4 only
  the message of a failure. Resize carries a stream of JSON ``{"Width": w, "Height": h}``.
- ``v5.channel.k8s.io`` adds the CLOSE signal ``[255, channel]``: the client half-closes one
  channel (stdin, so the command sees EOF). Any other length after 255, or a channel out of
  range, is a protocol error that ends the session.
- Negotiation: a request that offers ``v5.channel.k8s.io`` anywhere is served v5 (the API
  server's, and since 1.36 the kubelet's, stream translator speaks only v5); otherwise the
  first protocol in the client's order that the server knows wins; no header at all means
  the unnamed binary protocol. Nothing known is ``403 Forbidden`` with an empty body, which is
  what ``golang.org/x/net/websocket`` answers when the handshake hook refuses.
- port-forward over WebSocket: ports from the ``port`` query (repeatable, comma lists); two
  channels per port, ``2i`` data (both ways) and ``2i+1`` error (server to client); the server
  first writes the port as a little-endian uint16 on both. Subprotocols ``v4.channel.k8s.io``,
  ``v4.base64.channel.k8s.io`` and none.
- port-forward tunneled: a subprotocol ``SPDY/3.1+<p>.k8s.io`` asks for SPDY carried inside
  binary messages (what ``kubectl port-forward`` sends since 1.31); the server answers with
  ``SPDY/3.1+portforward.k8s.io`` and then speaks the SPDY port-forward protocol over the
  message stream, with no HTTP upgrade of its own inside.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsproto.utilities import generate_accept_token

__all__ = [
    "CLOSE_SIGNAL",
    "ERROR",
    "NO_PROTOCOL",
    "PORT_FORWARD_PROTOCOLS",
    "PORT_FORWARD_TUNNEL",
    "REMOTECOMMAND_PROTOCOLS",
    "RESIZE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "V1_BASE64",
    "V1_BINARY",
    "V4_BASE64",
    "V4_BINARY",
    "V5",
    "Accept",
    "ChannelProtocol",
    "CloseChannel",
    "Data",
    "ProtocolViolation",
    "Rejection",
    "ResizeDecoder",
    "Skip",
    "TerminalSize",
    "Tunnel",
    "check_upgrade",
    "decode",
    "encode",
    "encode_status",
    "offered_protocols",
    "parse_ports",
    "port_prefix",
    "select_port_forward",
    "select_remotecommand",
]

V5 = "v5.channel.k8s.io"
V4_BINARY = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1_BINARY = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
NO_PROTOCOL = ""
"""The request named no subprotocol: binary channels with pre-v4 semantics."""

TUNNEL_PREFIX = "SPDY/3.1+"
KUBERNETES_SUFFIX = ".k8s.io"
PORT_FORWARD_SPDY = "portforward.k8s.io"
PORT_FORWARD_TUNNEL = TUNNEL_PREFIX + PORT_FORWARD_SPDY

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
CLOSE_SIGNAL = 255


@dataclass(frozen=True)
class ChannelProtocol:
    """One negotiated channel subprotocol; ``name`` is what the 101 response echoes."""

    name: str
    base64: bool
    version: int
    """1 (unversioned), 4 or 5: v4 puts a JSON Status on the error channel, v5 adds CLOSE."""

    @property
    def stream_close(self) -> bool:
        """Whether the client may half-close a channel with ``[255, channel]``."""
        return self.version >= 5

    @property
    def status_json(self) -> bool:
        """Whether the error channel carries a whole ``metav1.Status`` as JSON."""
        return self.version >= 4


PROTOCOLS: Mapping[str, ChannelProtocol] = {
    p.name: p
    for p in (
        ChannelProtocol(V5, base64=False, version=5),
        ChannelProtocol(V4_BINARY, base64=False, version=4),
        ChannelProtocol(V4_BASE64, base64=True, version=4),
        ChannelProtocol(V1_BINARY, base64=False, version=1),
        ChannelProtocol(V1_BASE64, base64=True, version=1),
        ChannelProtocol(NO_PROTOCOL, base64=False, version=1),
    )
}
REMOTECOMMAND_PROTOCOLS = (V5, V4_BINARY, V4_BASE64, V1_BINARY, V1_BASE64, NO_PROTOCOL)
PORT_FORWARD_PROTOCOLS = (V4_BINARY, V4_BASE64, NO_PROTOCOL)


@dataclass(frozen=True)
class Tunnel:
    """Port-forward as SPDY inside binary messages; ``subprotocol`` goes in the 101."""

    subprotocol: str
    spdy_protocol: str


@dataclass(frozen=True)
class Rejection:
    """An HTTP answer instead of the upgrade; the connection closes after it."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The raw HTTP/1.1 response, for a caller that writes it straight to the socket."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class Accept:
    """The 101 response's headers, for whichever HTTP layer writes it (h11 or raw)."""

    headers: tuple[tuple[str, str], ...]

    def to_bytes(self) -> bytes:
        """The raw ``101 Switching Protocols`` response."""
        lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def offered_protocols(header: str | None) -> list[str]:
    """The subprotocols of a ``Sec-WebSocket-Protocol`` value, in the client's order."""
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


def check_upgrade(method: str, headers: Mapping[str, str]) -> Rejection | None:
    """Refuse a request that is not a version-13 WebSocket upgrade, as x/net/websocket does.

    ``headers`` has lower-cased names (``http_server.Request.headers``).
    """
    if method != "GET":
        return Rejection(405, "Method Not Allowed", body=b"bad method")
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        return Rejection(400, "Bad Request", body=b"not websocket protocol")
    if not headers.get("sec-websocket-key", "").strip():
        return Rejection(400, "Bad Request", body=b"mismatch challenge/response")
    if headers.get("sec-websocket-version", "").strip() != "13":
        return Rejection(
            400,
            "Bad Request",
            headers=(("Sec-WebSocket-Version", "13"),),
            body=b"missing or bad WebSocket Version",
        )
    return None


def accept(headers: Mapping[str, str], subprotocol: str) -> Accept:
    """The 101 headers for a checked request (see ``check_upgrade``)."""
    key = headers["sec-websocket-key"].strip().encode("ascii")
    out = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(key).decode("ascii")),
    ]
    if subprotocol:
        out.append(("Sec-WebSocket-Protocol", subprotocol))
    return Accept(tuple(out))


def _forbidden() -> Rejection:
    return Rejection(403, "Forbidden")


def _first_known(offered: Sequence[str], known: Iterable[str]) -> ChannelProtocol | Rejection:
    allowed = set(known)
    if not offered:
        return PROTOCOLS[NO_PROTOCOL] if NO_PROTOCOL in allowed else _forbidden()
    for name in offered:
        if name in allowed and name != NO_PROTOCOL:
            return PROTOCOLS[name]
    return _forbidden()


def select_remotecommand(offered: Sequence[str]) -> ChannelProtocol | Rejection:
    """The channel protocol for an exec or attach request offering ``offered``."""
    if V5 in offered:
        return PROTOCOLS[V5]
    return _first_known(offered, REMOTECOMMAND_PROTOCOLS)


def select_port_forward(
    offered: Sequence[str], spdy_protocols: Sequence[str] = (PORT_FORWARD_SPDY,)
) -> ChannelProtocol | Tunnel | Rejection:
    """Channels, a SPDY tunnel, or a refusal for a port-forward request.

    A tunneling offer wins over channel offers, as in the kubelet's handler chain. Tunneled
    SPDY protocols the server lacks get the SPDY handshake's own refusal (403 with the
    accepted versions), since that is what a client behind the API server would see.
    """
    tunneled = [
        p.removeprefix(TUNNEL_PREFIX)
        for p in offered
        if p.startswith(TUNNEL_PREFIX) and p.endswith(KUBERNETES_SUFFIX)
    ]
    if not tunneled:
        return _first_known(offered, PORT_FORWARD_PROTOCOLS)
    for name in tunneled:
        if name in spdy_protocols:
            return Tunnel(TUNNEL_PREFIX + name, name)
    message = (
        "unable to upgrade: unable to negotiate protocol: "
        f"client supports {tunneled}, server accepts {list(spdy_protocols)}"
    )
    return Rejection(
        403,
        "Forbidden",
        headers=(
            *(("X-Accepted-Stream-Protocol-Versions", p) for p in spdy_protocols),
            ("Content-Type", "text/plain; charset=utf-8"),
        ),
        body=message.encode() + b"\n",
    )


@dataclass(frozen=True)
class Data:
    """Payload for ``channel`` (base64 already decoded)."""

    channel: int
    data: bytes


@dataclass(frozen=True)
class CloseChannel:
    """v5: the client half-closed ``channel``."""

    channel: int


@dataclass(frozen=True)
class Skip:
    """A message the server drops and goes on (the kubelet logs these)."""

    reason: str


class ProtocolViolation(ValueError):
    """A message that ends the session (a malformed v5 CLOSE)."""


def decode(
    protocol: ChannelProtocol, message: bytes | str, channels: int
) -> Data | CloseChannel | Skip:
    """What one client message means on a session with ``channels`` channels."""
    raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    if not raw:
        return Skip("empty message")
    if protocol.stream_close and raw[0] == CLOSE_SIGNAL:
        if len(raw) != 2:
            raise ProtocolViolation(f"close signal with {len(raw) - 1} bytes, not one channel")
        if raw[1] >= channels:
            raise ProtocolViolation(f"close signal for channel {raw[1]}, which does not exist")
        return CloseChannel(raw[1])
    channel = raw[0] - ord("0") if protocol.base64 else raw[0]
    if not 0 <= channel < channels:
        return Skip(f"channel {channel} does not exist")
    payload = raw[1:]
    if protocol.base64:
        try:
            text = payload.replace(b"\r", b"").replace(b"\n", b"")
            payload = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            return Skip(f"invalid base64 on channel {channel}: {exc}")
    return Data(channel, payload)


def encode(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    """The message carrying ``data`` on ``channel``: bytes (binary) or str (base64, text)."""
    if protocol.base64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes((channel,)) + data


def encode_status(protocol: ChannelProtocol, status: Mapping[str, Any]) -> bytes | None:
    """What the error channel carries for ``status`` (a ``metav1.Status`` as a dict).

    v4+: the Status as JSON. Before v4 only a failure's message, and nothing on success.
    """
    if protocol.status_json:
        return json.dumps(dict(status), separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return None
    return str(status.get("message", "")).encode()


def port_prefix(port: int) -> bytes:
    """The first message body on a port's data and error channels."""
    return struct.pack("<H", port)


def parse_ports(values: Sequence[str]) -> tuple[int, ...]:
    """The ``port`` query values of a WebSocket port-forward, as the kubelet reads them.

    Raises ``ValueError`` with the kubelet's message (its answer is a 400).
    """
    if not values:
        raise ValueError('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError('query parameter "port" cannot be empty')
        for part in value.split(","):
            if not part.isdigit() or not part.isascii() or int(part) > 0xFFFF:
                raise ValueError(f"unable to parse {value!r} as a port")
            if int(part) < 1:
                raise ValueError(f"port {value!r} must be > 0")
            ports.append(int(part))
    return tuple(ports)


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class ResizeDecoder:
    """The resize channel's stream of JSON objects, fed in whatever pieces they arrive in.

    Like Go's ``json.Decoder`` into ``TerminalSize``: keys match case-insensitively, a missing
    one is 0, a value outside uint16 or malformed JSON is an error after which the kubelet
    stops reading resizes (``ValueError`` here). ``limit`` bounds the unparsed tail kept.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._buffer = ""
        self._limit = limit
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        """Sizes completed by ``data``."""
        self._buffer += data.decode("utf-8", errors="strict")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return sizes
            try:
                value, end = self._json.raw_decode(text)
            except json.JSONDecodeError as exc:
                incomplete = exc.pos >= len(text) or exc.msg.startswith("Unterminated string")
                if not incomplete:
                    raise ValueError(f"resize is not JSON: {exc}") from None
                if len(text) > self._limit:
                    raise ValueError("resize message too long") from None
                self._buffer = text
                return sizes
            sizes.append(_terminal_size(value))
            self._buffer = text[end:]


def _terminal_size(value: Any) -> TerminalSize:
    if not isinstance(value, dict):
        raise ValueError(f"resize is not an object: {value!r}")
    fields = {str(k).lower(): v for k, v in value.items()}
    dims = []
    for name in ("width", "height"):
        v = fields.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
            raise ValueError(f"resize {name} is not a uint16: {v!r}")
        dims.append(v)
    return TerminalSize(dims[0], dims[1])
