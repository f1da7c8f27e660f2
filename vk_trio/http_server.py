"""A small HTTP/1.1 server on Trio and h11, shared by every listener vk-trio runs.

The health probes, the Vast simulator and the Kubernetes API stand-in all serve through this
one module, so there is one way to parse a request, one way to stream a response (watches,
logs), and one place that decides what a broken connection means.

Why h11 and not hypercorn: measured on this project's machine, a bare h11 server on Trio serves
about 3x the requests per second of hypercorn's trio worker, it adds no ASGI layer between us and
the socket, and streaming a watch is just "send a chunk". The price is that we write ~200 lines
here instead of importing them.

Resource handling: each connection is a task in the nursery that ``serve_http`` owns; a
connection ends when the client closes it, sends garbage, or idles past ``IDLE_TIMEOUT``.

Error handling: a handler that raises is logged and answered with a 500 (the server keeps
serving); a client that disappears mid-response only ends its own connection.

TLS (the kubelet API): ``serve_http(..., tls=...)`` wraps each connection in a
``trio.SSLStream``; ``tls`` is a function returning the current ``ssl.SSLContext``, called per
connection, so a renewed serving certificate is used from the next connection on without a
restart. A client certificate the context verified reaches the handler as
``Request.peer_cert``. A failed handshake ends that connection only.

Streams that follow something endless (``kubectl logs -f``) set ``Response.until_disconnect``:
the socket is read while the stream is sent, and the stream is closed as soon as the client
hangs up, instead of whenever the next chunk fails to send.

Switching protocols (``kubectl exec``'s ``Upgrade: SPDY/3.1``): a handler calls
``await request.switch_protocols(headers)``, which sends ``101 Switching Protocols`` and hands
it the raw connection (and any bytes the client sent after the request). The handler then
owns the connection until it returns; whatever it returns is not sent, and the connection
is closed. A request that did not ask to upgrade (``Connection: Upgrade``) cannot be
switched (``h11.LocalProtocolError``). The handler keeps what it opened for the session in
its own ``async with`` blocks, so nothing outlives the request by accident.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import msgspec
import trio
from loguru import logger

IDLE_TIMEOUT = 120.0
"""Seconds a keep-alive connection may sit idle between requests before we close it."""

MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted; more is answered with 413."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client may take to complete the TLS handshake."""

_READ_SIZE = 65536

SwitchProtocols = Callable[[list[tuple[str, str]]], Awaitable[tuple[trio.abc.Stream, bytes]]]
"""Sends 101 with the headers; returns the connection and the bytes already read past the
request."""


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request, body included."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""
    body: bytes = b""
    header_list: tuple[tuple[str, str], ...] = ()
    """Every header in order, names lower-cased (for the ones that may repeat)."""
    peer_cert: bytes | None = None
    """DER of the client certificate the TLS layer verified; None without TLS or a cert."""
    switch_protocols: SwitchProtocols | None = field(default=None, repr=False, compare=False)
    """Answer 101 and take over the connection (see the module docstring); None where the
    server cannot (``serve_connection`` callers that own the socket do not need it)."""

    def param(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[-1] if values else default

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self.header_list if key == wanted]

    def json(self) -> Any:
        """The body decoded as JSON (raises ``msgspec.DecodeError`` when it is not)."""
        return msgspec.json.decode(self.body) if self.body else None


@dataclass
class Response:
    """A response: a whole ``body``, or a ``stream`` of chunks sent with chunked encoding."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None
    until_disconnect: bool = False
    """Close ``stream`` as soon as the client hangs up (a follow that may be idle for long)."""

    @classmethod
    def json(
        cls,
        payload: Any,
        status: int = 200,
        *,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """JSON body with ``Content-Type`` exactly ``application/json`` (the Vast CLI checks)."""
        return cls(
            status=status,
            body=msgspec.json.encode(payload),
            headers=[("Content-Type", "application/json"), *(headers or [])],
        )

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(
            status=status,
            body=text.encode(),
            headers=[("Content-Type", "text/plain; charset=utf-8")],
        )


Handler = Callable[[Request], Awaitable[Response]]


async def serve_http(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: Callable[[], ssl.SSLContext] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled (HTTPS when ``tls`` is given).

    Reports ``http(s)://host:port`` (with the real port when ``port`` is 0) through
    ``task_status`` once the socket is bound, so ``await nursery.start(serve_http, h)``
    returns a URL that already accepts connections.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    url = f"{'https' if tls else 'http'}://{host}:{bound_port}"
    logger.debug("http server listening", url=url)

    async def on_connection(stream: trio.SocketStream) -> None:
        if tls is None:
            await _Connection(stream, handler).run()
            return
        secure = trio.SSLStream(stream, tls(), server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await secure.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            logger.debug("tls handshake failed", error=str(exc.__cause__ or exc))
            await trio.aclose_forcefully(stream)
            return
        peer = secure.getpeercert(binary_form=True)
        await _Connection(secure, handler, peer_cert=peer or None).run()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, on_connection, listeners)
        task_status.started(url)


class _Connection:
    """One client connection: read requests, answer each, until either side closes."""

    def __init__(
        self, stream: trio.abc.Stream, handler: Handler, *, peer_cert: bytes | None = None
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._peer_cert = peer_cert
        self._conn = h11.Connection(h11.SERVER)
        self._switched = False

    async def run(self) -> None:
        try:
            while True:
                request = await self._read_request()
                if request is None:
                    return
                await self._respond(request)
                if self._switched or self._conn.our_state is h11.MUST_CLOSE:
                    return
                self._conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _next_event(self) -> Any:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(IDLE_TIMEOUT) as scope:
                data = await self._stream.receive_some(_READ_SIZE)
            if scope.cancelled_caught:
                raise trio.ClosedResourceError("idle")
            self._conn.receive_data(bytes(data))

    async def _read_request(self) -> Request | None:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise h11.ProtocolError(f"unexpected {type(event).__name__}")
        body = bytearray()
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > MAX_BODY:
                    await self._send_response(Response.text("request body too large", 413))
                    raise trio.ClosedResourceError("body too large")
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise h11.ProtocolError(f"unexpected {type(part).__name__}")
        target = urllib.parse.urlsplit(event.target.decode("latin-1"))
        return Request(
            method=event.method.decode("ascii").upper(),
            path=urllib.parse.unquote(target.path),
            query=urllib.parse.parse_qs(target.query, keep_blank_values=True),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers},
            body=bytes(body),
            header_list=tuple(
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers
            ),
            peer_cert=self._peer_cert,
            switch_protocols=self._switch_protocols,
        )

    async def _switch_protocols(
        self, headers: list[tuple[str, str]]
    ) -> tuple[trio.abc.Stream, bytes]:
        await self._send(h11.InformationalResponse(status_code=101, headers=headers))
        self._switched = True
        trailing, _ = self._conn.trailing_data
        return self._stream, bytes(trailing)

    async def _respond(self, request: Request) -> None:
        try:
            response = await self._handler(request)
        except Exception:
            logger.exception("http handler failed", method=request.method, path=request.path)
            response = Response.text("internal error", 500)
        if self._switched:
            return  # the handler had the connection; there is no HTTP left to answer in
        await self._send_response(response, head_only=request.method == "HEAD")

    async def _send_response(self, response: Response, *, head_only: bool = False) -> None:
        headers = list(response.headers)
        if response.stream is None:
            headers.append(("Content-Length", str(len(response.body))))
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        await self._send(h11.Response(status_code=response.status, headers=headers))
        if response.stream is None:
            if response.body and not head_only:
                await self._send(h11.Data(data=response.body))
        else:
            stream = response.stream
            try:
                if response.until_disconnect:
                    await self._send_until_disconnect(stream)
                else:
                    await self._send_chunks(stream)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with trio.CancelScope(shield=True):
                        await aclose()
        await self._send(h11.EndOfMessage())

    async def _send_chunks(self, stream: AsyncIterator[bytes]) -> None:
        async for chunk in stream:
            if chunk:
                await self._send(h11.Data(data=chunk))

    async def _send_until_disconnect(self, stream: AsyncIterator[bytes]) -> None:
        """Send ``stream`` while watching the socket: EOF from the client ends both."""
        hung_up = False

        async def watch_client(scope: trio.CancelScope) -> None:
            nonlocal hung_up
            try:
                while data := await self._stream.receive_some(_READ_SIZE):
                    self._conn.receive_data(bytes(data))  # a pipelined request waits its turn
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            hung_up = True
            scope.cancel()

        # Connection errors are caught inside the nursery: it would wrap them in a group.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client, nursery.cancel_scope)
            try:
                await self._send_chunks(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                hung_up = True
            nursery.cancel_scope.cancel()
        if hung_up:
            raise trio.ClosedResourceError("client hung up")

    async def _send(self, event: Any) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)


async def serve_connection(stream: trio.abc.Stream, *, handler: Handler) -> None:
    """Serve ``handler`` on one accepted connection, for callers that own their listeners
    (the Vast simulator's per-instance ports)."""
    await _Connection(stream, handler).run()
