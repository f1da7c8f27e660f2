"""The stand-in's ``UpgradeAwareProxy``: a request that asks to switch protocols (``kubectl
exec``, ``attach``, ``port-forward`` over SPDY/3.1) is sent on to the kubelet over TLS with
the stand-in's kubelet-client certificate, upgrade headers and all; when the kubelet answers
``101``, that answer (its ``Upgrade``, ``Connection`` and ``X-Stream-Protocol-Version``) goes
to the client and the two connections are spliced, bytes copied both ways until either
side hangs up (the other then has ``GRACE`` seconds to finish). Any other answer is relayed
as it is, status, type and body, as the real proxy relays a refused upgrade.

A WebSocket upgrade goes through the same way (its ``Sec-WebSocket-*`` headers both ways;
the accept token depends on the key only, so the kubelet's is the client's), which is what a
1.36 API server does for a node declaring ``ExtendWebSocketsToKubelet``; ``node_api``
decides which requests get here. A real 1.30-1.35 server instead translates kubectl's v5
WebSocket into SPDY towards the kubelet (``StreamTranslatorProxy``) and tunnels
port-forward; the stand-in refuses those (400) and kubectl falls back to SPDY.
"""

from __future__ import annotations

import ssl

import h11
import trio

from vk_trio.http_server import Request, Response

__all__ = ["GRACE", "proxy_upgrade"]

GRACE = 5.0
"""Seconds one direction may go on after the other ended."""
CONNECT_TIMEOUT = 10.0
_FORWARDED = (
    "x-stream-protocol-version",
    "upgrade",
    "connection",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
)
_READ_SIZE = 65536


async def proxy_upgrade(
    request: Request, host: str, port: int, target: str, context: ssl.SSLContext
) -> Response:
    """Send ``request`` to the kubelet at ``host:port`` as ``target`` and relay its answer
    (see the module docstring). The returned Response is not sent when the connection was
    switched."""
    with trio.fail_after(CONNECT_TIMEOUT):
        kubelet = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
    try:
        client = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{host}:{port}"), ("Content-Length", "0")]
        headers += [(k, v) for k, v in request.header_list if k in _FORWARDED]
        data = client.send(h11.Request(method=request.method, target=target, headers=headers))
        await kubelet.send_all((data or b"") + (client.send(h11.EndOfMessage()) or b""))
        answer = await _answer(client, kubelet)
        if isinstance(answer, Response):
            return answer
        switch = request.switch_protocols
        assert switch is not None, "the stand-in runs on serve_http"
        downstream, received = await switch(
            [(k.decode(), v.decode()) for k, v in answer.headers if k.decode() in _FORWARDED]
        )
        trailing, _ = client.trailing_data
        await _splice(downstream, received, kubelet, bytes(trailing))
        return Response()
    finally:
        await trio.aclose_forcefully(kubelet)


async def _answer(
    client: h11.Connection, kubelet: trio.SSLStream[trio.SocketStream]
) -> Response | h11.InformationalResponse:
    """The kubelet's 101, or its whole other answer as a Response."""
    status, content_type, body = 0, "text/plain", bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(bytes(await kubelet.receive_some(_READ_SIZE)))
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return event
        elif isinstance(event, h11.Response):
            status = event.status_code
            content_type = dict(event.headers).get(b"content-type", b"text/plain").decode()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Response(
                status=status, body=bytes(body), headers=[("Content-Type", content_type)]
            )


async def _splice(
    downstream: trio.abc.Stream, received: bytes, kubelet: trio.abc.Stream, trailing: bytes
) -> None:
    async with trio.open_nursery() as nursery:
        scope = nursery.cancel_scope
        nursery.start_soon(_pump, downstream, kubelet, received, scope)
        nursery.start_soon(_pump, kubelet, downstream, trailing, scope)


async def _pump(
    source: trio.abc.Stream, sink: trio.abc.Stream, first: bytes, scope: trio.CancelScope
) -> None:
    try:
        if first:
            await sink.send_all(first)
        while data := await source.receive_some(_READ_SIZE):
            await sink.send_all(data)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        scope.deadline = min(scope.deadline, trio.current_time() + GRACE)
