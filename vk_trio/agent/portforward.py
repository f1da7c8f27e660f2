"""``kubectl port-forward``: one link connection per forwarded TCP connection.

The agent connects to the port on the instance's loopback (127.0.0.1, then ::1 when IPv4
refuses: a server may listen on either), answers ``Accepted`` or ``Failed`` with the reason
``ConnectionRefused`` and a line like the kubelet's, then copies bytes both ways as
``Chunk`` frames of at most :data:`CHUNK` bytes. An end is half-closed on the other side
(``End`` ↔ TCP FIN), so a client that sends its request and shuts down its writing still
gets the whole answer; the connection ends when both directions have ended, or at once when
either side breaks or the node hangs up. Each direction holds at most one piece in flight:
the port is read only as fast as the link takes it, and the link as fast as the port does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable

import trio

from vk_trio.agent.link import FrameStream, LinkClosed
from vk_trio.agent.protocol import Accepted, Chunk, End, Failed, PortForward

__all__ = ["CHUNK", "serve_port_forward"]

CHUNK = 32 * 1024
CONNECT_TIMEOUT = 10.0
_ERRORS = (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _dial(host: str, family: socket.AddressFamily, port: int) -> trio.SocketStream:
    """One connection attempt (``open_tcp_stream`` would hide the errno in a group)."""
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _connect(port: int) -> trio.SocketStream | str:
    """A connection to the port on loopback, or why there is none (IPv4's reason first)."""
    why = ""
    for host, family, name in (
        ("127.0.0.1", socket.AF_INET, "tcp4"),
        ("::1", socket.AF_INET6, "tcp6"),
    ):
        address = f"[{host}]" if family == socket.AF_INET6 else host
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                return await _dial(host, family, port)
        except OSError as error:
            reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
            why = why or f"dial {name} {address}:{port}: connect: {reason}"
        except trio.TooSlowError:
            why = why or f"dial {name} {address}:{port}: i/o timeout"
    return why


async def serve_port_forward(frames: FrameStream, request: PortForward, pod_uid: str) -> None:
    """Relay one connection to ``request.port`` until both directions ended."""
    if not 0 < request.port < 65536:
        message = f"invalid port {request.port}"
        await frames.send(Failed(reason="BadRequest", message=message))
        return
    tcp = await _connect(request.port)
    if isinstance(tcp, str):
        message = f"error forwarding port {request.port} to pod {pod_uid}: {tcp}"
        await frames.send(Failed(reason="ConnectionRefused", message=message))
        return
    async with tcp:
        await frames.send(Accepted())
        async with trio.open_nursery() as nursery:
            for direction in (_to_port, _to_link):
                nursery.start_soon(_guarded, direction, frames, tcp, nursery.cancel_scope)


_Direction = Callable[[FrameStream, trio.SocketStream], Awaitable[None]]


async def _guarded(
    direction: _Direction, frames: FrameStream, tcp: trio.SocketStream, scope: trio.CancelScope
) -> None:
    """Run one direction; a broken side ends both."""
    try:
        await direction(frames, tcp)
    except _ERRORS:
        scope.cancel()


async def _to_port(frames: FrameStream, tcp: trio.SocketStream) -> None:
    while True:
        frame = await frames.receive_stream()
        if frame is None:
            raise LinkClosed("the node hung up")
        if isinstance(frame, Chunk):
            await tcp.send_all(frame.data)
        elif isinstance(frame, End):
            await tcp.send_eof()
            return


async def _to_link(frames: FrameStream, tcp: trio.SocketStream) -> None:
    while data := await tcp.receive_some(CHUNK):
        await frames.send(Chunk(data=data))
    await frames.send(End())
