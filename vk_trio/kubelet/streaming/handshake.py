"""What the kubelet checks of an exec, attach or port-forward request before it switches
protocols, with the kubelet's answers (``Refusal``: status, text, extra headers).

The query, as the API server builds it for the kubelet (``streamParams``): ``input``,
``output``, ``error`` and ``tty`` set to ``1``, ``command`` repeated. The API's own names
(``stdin``, ``stdout``, ``stderr``, ``tty`` with ``true``) are accepted too, for callers that
come straight to the kubelet. As in the kubelet's ``NewOptions``, ``tty`` with ``error``
drops stderr (a terminal has one output) rather than failing, and a request for none of
stdin, stdout and stderr is a 400.

The upgrade: SPDY/3.1 needs ``Connection: Upgrade`` and ``Upgrade: SPDY/3.1``; a
WebSocket request (``is_websocket``) is negotiated by ``websocket_routes`` instead, with the
subprotocols of ``Sec-WebSocket-Protocol``. ``X-Stream-Protocol-Version``
(every value of the header) is matched in the client's order of preference against the
server's list (``httpstream.Handshake``): none sent is a 400, none in common a 403 with
``X-Accepted-Stream-Protocol-Versions``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vk_trio.http_server import Request

__all__ = [
    "PORTFORWARD_PROTOCOLS",
    "REMOTECOMMAND_PROTOCOLS",
    "Refusal",
    "StreamOptions",
    "is_websocket",
    "negotiate",
    "stream_options",
    "switching_headers",
]

REMOTECOMMAND_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
"""exec and attach over SPDY; v4 and v5 end with a JSON Status, v3+ resize terminals."""
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
SPDY = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
_KUBELET_TRUE = frozenset({"1"})
_API_TRUE = frozenset({"1", "true", "True", "TRUE", "t", "T"})


class Refusal(Exception):
    """The kubelet's answer to a request it will not switch: ``status`` and plain text."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass(frozen=True)
class StreamOptions:
    """Which of the process's streams the client wants, and whether on a terminal."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(request: Request, kubelet_name: str, api_name: str) -> bool:
    if (request.param(kubelet_name) or "") in _KUBELET_TRUE:
        return True
    return (request.param(api_name) or "") in _API_TRUE


def stream_options(request: Request) -> StreamOptions:
    """The exec/attach query as the kubelet reads it; ``Refusal`` (400) when it asks for no
    stream at all."""
    tty = _flag(request, "tty", "tty")
    stdin = _flag(request, "input", "stdin")
    stdout = _flag(request, "output", "stdout")
    stderr = _flag(request, "error", "stderr") and not tty
    if not (stdin or stdout or stderr):
        raise Refusal(400, "you must specify at least 1 of stdin, stdout, stderr")
    return StreamOptions(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


def is_websocket(request: Request) -> bool:
    """Whether the client asks for WebSocket rather than SPDY (its handlers differ)."""
    return "websocket" in request.headers.get("upgrade", "").lower()


def negotiate(request: Request, supported: tuple[str, ...]) -> str:
    """The protocol both sides speak, after checking the request asks for SPDY/3.1."""
    offered = [
        value.strip()
        for header in request.header_values(PROTOCOL_HEADER)
        for value in header.split(",")
        if value.strip()
    ]
    if not offered:
        raise Refusal(400, f"unable to upgrade: {PROTOCOL_HEADER} is required")
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise Refusal(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {_go(offered)}, "
            f"server accepts {_go(supported)}",
            [(ACCEPTED_HEADER, p) for p in supported],
        )
    connection = request.headers.get("connection", "").lower()
    upgrade = request.headers.get("upgrade", "").lower()
    if "upgrade" not in connection or SPDY.lower() not in upgrade:
        shown = {k: v for k, v in request.headers.items() if k != "authorization"}
        raise Refusal(400, f"unable to upgrade: missing upgrade headers in request: {shown}")
    return chosen


def _go(values: list[str] | tuple[str, ...]) -> str:
    """A list of strings as Go's ``%v`` prints it."""
    return "[" + " ".join(values) + "]"


def switching_headers(protocol: str) -> list[tuple[str, str]]:
    """The 101's headers for ``protocol``."""
    return [("Connection", "Upgrade"), ("Upgrade", SPDY), (PROTOCOL_HEADER, protocol)]
