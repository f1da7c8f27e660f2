"""The kubelet API's streaming routes, after authentication and authorization:

- ``/exec/{namespace}/{pod}[/{uid}]/{container}`` and ``/attach/...`` (same shapes);
- ``/portForward/{namespace}/{pod}[/{uid}]``;

GET or POST (the kubelet takes both). Everything that can be refused is refused before the
protocol switch, with the kubelet's plain-text answers, which the API server relays and
kubectl prints as "unable to upgrade connection: ...": the query (``handshake``), the pod
and container (``PodLookup.streaming``: 404, 400 "waiting to start", ``NotSupported`` when
the provider cannot reach the container), and, for exec and attach, the provider's process
itself (``Provider.exec``/``attach`` are entered first, so "not running" or "agent not linked
yet" is an HTTP error too; the process waits for its streams meanwhile, held back by the
stream that is not read yet). Only then ``101 Switching Protocols``, and the session runs on
the connection until it ends; leaving the provider's context ends the process (exec) or
detaches (attach).

A WebSocket upgrade (``Upgrade: websocket``) gets the same checks and the same sessions on
WebSocket channels (``websocket_routes``): exec/attach on the v5, v4 and older channel
protocols, port-forward on v4 channels (the ``port`` query) or as SPDY tunneled in binary
messages. Its refusals are those of the kubelet's WebSocket handlers (405 for a method other
than GET, 400 for a malformed upgrade, 403 for no known subprotocol). ``websocket_upgrades``
counts the sessions switched to WebSocket, so that tests can tell which transport a client
(kubectl, through an API server) really used.

Port-forward's connections are opened per stream pair, inside the session, so what goes
wrong with one port is reported on that pair's error stream, as the kubelet does.
"""

from __future__ import annotations

import functools

from loguru import logger

from vk_trio.http_server import Request, Response
from vk_trio.kubelet.streaming.handshake import (
    PORTFORWARD_PROTOCOLS,
    REMOTECOMMAND_PROTOCOLS,
    Refusal,
    StreamOptions,
    is_websocket,
    negotiate,
    stream_options,
    switching_headers,
)
from vk_trio.kubelet.streaming.portforward import serve_port_forward
from vk_trio.kubelet.streaming.remotecommand import StreamsMissing, relay, spdy_channels
from vk_trio.kubelet.streaming.spdy_transport import SpdyTransport, serve_spdy
from vk_trio.kubelet.streaming.websocket.protocol import ChannelProtocol, Tunnel
from vk_trio.kubelet.streaming.websocket_routes import (
    port_forward_protocol,
    remotecommand_protocol,
    serve_port_forward_websocket,
    serve_remotecommand_websocket,
    websocket_ports,
)
from vk_trio.node.lookup import PodLookup
from vk_trio.node.provider import AttachOptions, ContainerError, ExecOptions, ProcessIO, Provider

__all__ = ["STREAMING", "StreamingRoutes"]

STREAMING = frozenset({"exec", "attach", "portForward"})
"""The first path segments this module serves."""


class StreamingRoutes:
    """exec, attach and port-forward for the kubelet API server."""

    def __init__(self, pods: PodLookup, provider: Provider) -> None:
        self._pods = pods
        self._provider = provider
        self.websocket_upgrades = 0
        """Sessions switched to WebSocket so far (exec, attach and port-forward)."""

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """Serve ``request`` (``parts``: its path's segments, ``parts[0]`` in ``STREAMING``)."""
        if request.method not in ("GET", "POST"):
            return Response.text("405: Method Not Allowed\n", 405)
        try:
            if parts[0] == "portForward" and len(parts) in (3, 4):
                return await self._port_forward(request, parts[1:])
            if parts[0] in ("exec", "attach") and len(parts) in (4, 5):
                return await self._remote_command(request, parts[0], parts[1:])
        except Refusal as refusal:
            response = Response.text(refusal.message, refusal.status)
            response.headers += refusal.headers
            return response
        except ContainerError as exc:
            return Response.text(str(exc), exc.status)
        return Response.text("404 page not found\n", 404)

    async def _remote_command(self, request: Request, verb: str, rest: list[str]) -> Response:
        namespace, name, container = rest[0], rest[1], rest[-1]
        uid = rest[2] if len(rest) == 4 else None
        options = stream_options(request)
        command = tuple(request.query.get("command", []))
        if verb == "exec" and not command:
            raise Refusal(400, "you must specify at least one command for the container")
        websocket = remotecommand_protocol(request) if is_websocket(request) else None
        protocol = websocket.name if websocket else negotiate(request, REMOTECOMMAND_PROTOCOLS)
        pod, container = self._pods.streaming(namespace, name, container, uid)
        if verb == "exec":
            opened = self._provider.exec(pod, container, _exec_options(command, options))
        else:
            opened = self._provider.attach(pod, container, _attach_options(options))
        async with opened as process:
            if websocket is not None:
                self.websocket_upgrades += 1
                logger.bind(pod=f"{namespace}/{name}").debug(verb, websocket=protocol)
                await serve_remotecommand_websocket(
                    request, websocket, options, process, command if verb == "exec" else None
                )
                return Response()
            switch = request.switch_protocols
            assert switch is not None, "the kubelet API runs on serve_http"
            socket, received = await switch(switching_headers(protocol))
            logger.bind(pod=f"{namespace}/{name}").debug(verb, protocol=protocol)
            session = functools.partial(
                _remote_command_session,
                protocol=protocol,
                options=options,
                process=process,
                command=command if verb == "exec" else None,
            )
            await serve_spdy(socket, received, session)
        return Response()  # not sent: the connection was switched

    async def _port_forward(self, request: Request, rest: list[str]) -> Response:
        namespace, name = rest[0], rest[1]
        uid = rest[2] if len(rest) == 3 else None
        websocket = port_forward_protocol(request) if is_websocket(request) else None
        if isinstance(websocket, ChannelProtocol):
            websocket_ports(request)  # a bad port query is refused before the pod is looked up
        protocol = "" if websocket else negotiate(request, PORTFORWARD_PROTOCOLS)
        pod, _ = self._pods.streaming(namespace, name, None, uid)
        described = f"{namespace}/{name}, uid {pod.uid}"
        open_port = functools.partial(self._provider.port_forward, pod)
        if websocket is not None:
            self.websocket_upgrades += 1
            shown = websocket.subprotocol if isinstance(websocket, Tunnel) else websocket.name
            logger.bind(pod=f"{namespace}/{name}").debug("portForward", websocket=shown)
            await serve_port_forward_websocket(request, websocket, open_port, described)
            return Response()
        switch = request.switch_protocols
        assert switch is not None, "the kubelet API runs on serve_http"
        socket, received = await switch(switching_headers(protocol))
        logger.bind(pod=f"{namespace}/{name}").debug("portForward", protocol=protocol)
        await serve_spdy(
            socket,
            received,
            lambda transport: serve_port_forward(transport, open_port, described),
        )
        return Response()


def _exec_options(command: tuple[str, ...], options: StreamOptions) -> ExecOptions:
    return ExecOptions(
        command=command,
        tty=options.tty,
        stdin=options.stdin,
        stdout=options.stdout,
        stderr=options.stderr,
    )


def _attach_options(options: StreamOptions) -> AttachOptions:
    return AttachOptions(
        tty=options.tty, stdin=options.stdin, stdout=options.stdout, stderr=options.stderr
    )


async def _remote_command_session(
    transport: SpdyTransport,
    *,
    protocol: str,
    options: StreamOptions,
    process: ProcessIO,
    command: tuple[str, ...] | None,
) -> None:
    try:
        channels = await spdy_channels(transport, protocol, options)
    except StreamsMissing as exc:
        logger.info("exec/attach session abandoned", why=str(exc))
        return
    await relay(channels, process, command)
