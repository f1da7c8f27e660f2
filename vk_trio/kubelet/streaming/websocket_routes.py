"""exec, attach and port-forward over WebSocket, for ``routes``: the same sessions as over
SPDY (``relay``, ``forward``, ``serve_port_forward``) on the WebSocket transport's channels.

Why a module of its own: ``routes`` decides (authn/authz came before it, then the query, the
pod, the provider's process), this module only adapts. Each channel of a ``ChannelSession``
is given the shape the sessions already take (``Source``, ``Sink``, a half-closeable stream),
so the sessions need not know which transport carries them:

- exec/attach: stdin 0, stdout 1, stderr 2, error 3 (a JSON Status from v4), resize 4 (read
  only with a terminal; otherwise closed, so that stray resizes cannot stall the reader). The
  server cannot end one channel over WebSocket (v5's CLOSE goes client to server only), so a
  sink's end is a no-op and the session's end is the WebSocket's close, after the Status.
- port-forward on v4 channels: per port ``i`` of the ``port`` query, data ``2i`` and error
  ``2i+1``, each opened with the port (little-endian); one forwarded connection per port, as
  the kubelet's WebSocket handler does; the session closes once every port is done.
- port-forward tunneled (``SPDY/3.1+portforward.k8s.io``, what kubectl 1.31+ asks for): the
  SPDY port-forward session, unchanged, over the stream the binary messages carry.

A client that goes away (its close frame, or the connection drops) cancels the session, as
the SPDY transport's nursery does: the provider's process is killed, its ports closed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

import trio
from loguru import logger

from vk_trio.http_server import Request
from vk_trio.kubelet.streaming.handshake import Refusal, StreamOptions
from vk_trio.kubelet.streaming.portforward import OpenPort, forward, serve_port_forward
from vk_trio.kubelet.streaming.remotecommand import Channels, relay
from vk_trio.kubelet.streaming.spdy_transport import serve_spdy
from vk_trio.kubelet.streaming.websocket.protocol import (
    ERROR,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    ChannelProtocol,
    Rejection,
    Tunnel,
    accept,
    check_upgrade,
    offered_protocols,
    parse_ports,
    select_port_forward,
    select_remotecommand,
)
from vk_trio.kubelet.streaming.websocket.transport import (
    ChannelSession,
    WebSocket,
    open_port_forward,
    open_remotecommand,
    open_tunnel,
)
from vk_trio.node.provider import ProcessIO

__all__ = [
    "port_forward_protocol",
    "remotecommand_protocol",
    "serve_port_forward_websocket",
    "serve_remotecommand_websocket",
    "websocket_ports",
]


def _decided(
    decision: ChannelProtocol | Tunnel | Rejection,
) -> ChannelProtocol | Tunnel:
    if isinstance(decision, Rejection):
        body = decision.body.decode("utf-8", errors="replace")
        raise Refusal(
            decision.status,
            body,
            [(k, v) for k, v in decision.headers if k.lower() != "content-type"],
        )
    return decision


def remotecommand_protocol(request: Request) -> ChannelProtocol:
    """The channel protocol for an exec/attach WebSocket request, or ``Refusal`` (what
    ``x/net/websocket`` answers: 405, 400, or 403 when no subprotocol is known)."""
    decision = check_upgrade(request.method, request.headers) or select_remotecommand(
        offered_protocols(request.headers.get("sec-websocket-protocol"))
    )
    chosen = _decided(decision)
    assert isinstance(chosen, ChannelProtocol)
    return chosen


def port_forward_protocol(request: Request) -> ChannelProtocol | Tunnel:
    """Channels or a SPDY tunnel for a port-forward WebSocket request, or ``Refusal``."""
    decision = check_upgrade(request.method, request.headers) or select_port_forward(
        offered_protocols(request.headers.get("sec-websocket-protocol"))
    )
    return _decided(decision)


def websocket_ports(request: Request) -> tuple[int, ...]:
    """The ``port`` query of a channel port-forward; ``Refusal`` (400) as the kubelet says."""
    try:
        return parse_ports(request.query.get("port", []))
    except ValueError as exc:
        raise Refusal(400, str(exc)) from None


async def _switch(request: Request, subprotocol: str) -> tuple[trio.abc.Stream, bytes]:
    switch = request.switch_protocols
    assert switch is not None, "the kubelet API runs on serve_http"
    return await switch(list(accept(request.headers, subprotocol).headers))


class _Input:
    """One client-to-server channel as a ``Source``."""

    def __init__(self, session: ChannelSession, channel: int) -> None:
        self._session = session
        self._channel = channel

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._session.receive(self._channel)


class _Output:
    """One server-to-client channel as a ``Sink``; its end is not sent (see the module
    docstring) unless ``on_eof`` says what ending means for it."""

    def __init__(
        self, session: ChannelSession, channel: int, on_eof: Callable[[], None] | None = None
    ) -> None:
        self._session = session
        self._channel = channel
        self._on_eof = on_eof

    async def send_all(self, data: bytes) -> None:
        if data:
            await self._session.send(self._channel, bytes(data))

    async def send_eof(self) -> None:
        if self._on_eof is not None:
            self._on_eof()
        await trio.lowlevel.checkpoint()


class _DataChannel(trio.abc.HalfCloseableStream):
    """A port's data channel as the byte stream ``forward`` relays. Ending it (the pod's side
    ended) stops reading the client's side too: v4 has no half-close from the client, so
    ``forward`` would otherwise wait for the whole WebSocket to close."""

    def __init__(self, session: ChannelSession, channel: int) -> None:
        self._input = _Input(session, channel)
        self._output = _Output(session, channel, functools.partial(session.close_input, channel))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._input.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._output.send_all(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self._output.send_eof()

    async def aclose(self) -> None:
        await self._output.send_eof()


async def _until_peer_gone(ws: WebSocket, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body``; the peer's close (or a dropped connection) cancels it."""
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await ws.wait_peer_gone()
            logger.debug("websocket peer gone; ending the session")
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        try:
            await body()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("websocket session broke", error=str(exc))
        nursery.cancel_scope.cancel()


def remotecommand_channels(session: ChannelSession, options: StreamOptions) -> Channels:
    """The session's channels as ``relay`` takes them."""
    if not options.tty:
        session.close_input(RESIZE)
    return Channels(
        error=_Output(session, ERROR),
        stdin=_Input(session, STDIN) if options.stdin else None,
        stdout=_Output(session, STDOUT) if options.stdout else None,
        stderr=_Output(session, STDERR) if options.stderr else None,
        resize=_Input(session, RESIZE) if options.tty else None,
        status_json=session.protocol.status_json,
    )


async def serve_remotecommand_websocket(
    request: Request,
    protocol: ChannelProtocol,
    options: StreamOptions,
    process: ProcessIO,
    command: Sequence[str] | None,
) -> None:
    """Switch to WebSocket and relay ``process`` until it exits or the client goes."""
    socket, received = await _switch(request, protocol.name)
    async with open_remotecommand(
        socket,
        protocol,
        stdin=options.stdin,
        stdout=options.stdout,
        stderr=options.stderr,
        trailing=received,
    ) as session:
        channels = remotecommand_channels(session, options)
        await _until_peer_gone(session.ws, functools.partial(relay, channels, process, command))


async def serve_port_forward_websocket(
    request: Request, protocol: ChannelProtocol | Tunnel, open_port: OpenPort, pod: str
) -> None:
    """Switch to WebSocket and forward: the ports of the query over channels, or the SPDY
    session over a tunnel."""
    if isinstance(protocol, Tunnel):
        socket, received = await _switch(request, protocol.subprotocol)
        async with open_tunnel(socket, trailing=received) as tunnel:
            spdy = functools.partial(serve_port_forward, open_port=open_port, pod=pod)
            await _until_peer_gone(tunnel.ws, functools.partial(serve_spdy, tunnel, b"", spdy))
        return
    ports = websocket_ports(request)
    socket, received = await _switch(request, protocol.name)
    async with open_port_forward(socket, protocol, ports, trailing=received) as session:
        await _until_peer_gone(
            session.ws, functools.partial(_forward_ports, session, ports, open_port, pod)
        )


async def _forward_ports(
    session: ChannelSession, ports: Sequence[int], open_port: OpenPort, pod: str
) -> None:
    async with trio.open_nursery() as nursery:
        for i, port in enumerate(ports):
            data = _DataChannel(session, 2 * i)
            error = _Output(session, 2 * i + 1)
            nursery.start_soon(forward, str(port), data, error, open_port, pod)
