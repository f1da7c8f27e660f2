"""``kubectl port-forward`` over SPDY: each local connection is a pair of streams, relayed
to one connection the provider opens to the pod's port.

For every connection it accepts, kubectl opens two streams with the same ``requestID`` and
``port`` headers: ``streamType: error`` (which it only reads) and ``streamType: data``. As
in the kubelet's ``httpStreamHandler``, the session pairs them by ``requestID`` (an old
client without one: the stream ID, less 2 for data), gives a pair ``STREAM_CREATION_TIMEOUT``
to complete, and then, in its own task:

- parses the port (a bad one is reported on the error stream: "error parsing port ...");
- opens ``open_port(port)``, the provider's connection; a refusal is reported on the error
  stream as the kubelet words it ("error forwarding port 8000 to pod ns/name, uid ...: ...");
- copies both ways, each direction waiting for the other side to take what it read: the
  pod's bytes to the data stream, ended (FIN) when the pod's side ends; the client's bytes
  to the pod, ``send_eof`` when the client ends its stream;
- once the pod's side has ended (or broke: reported on the error stream), ends the error
  stream, which tells kubectl this connection is done, and waits for the client to end its
  side before closing the provider's connection.

The pairs live in the session's nursery: when the SPDY connection dies, every forwarded
connection is closed with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import trio
from loguru import logger

from vk_trio.kubelet.streaming.remotecommand import Sink
from vk_trio.kubelet.streaming.spdy_transport import SpdyStream, SpdyTransport
from vk_trio.node.provider import ContainerError

__all__ = ["STREAM_CREATION_TIMEOUT", "OpenPort", "forward", "serve_port_forward"]

STREAM_CREATION_TIMEOUT = 30.0
"""Seconds for the second stream of a pair to arrive."""
_CHUNK = 32 * 1024

OpenPort = Callable[[int], AbstractAsyncContextManager[trio.abc.HalfCloseableStream]]


@dataclass
class _Pair:
    request_id: str
    streams: dict[str, SpdyStream] = field(default_factory=dict)
    complete: trio.Event = field(default_factory=trio.Event)


def _request_id(stream: SpdyStream) -> str:
    given = stream.header("requestid")
    if given:
        return given
    offset = 2 if stream.header("streamtype") == "data" else 0
    return str(stream.stream_id - offset)


async def serve_port_forward(transport: SpdyTransport, open_port: OpenPort, pod: str) -> None:
    """Serve pairs until the connection ends; ``pod`` names it in error messages."""
    pairs: dict[str, _Pair] = {}
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await transport.accept()
            except trio.EndOfChannel:
                break
            kind = stream.header("streamtype")
            request_id = _request_id(stream)
            pair = pairs.get(request_id)
            if pair is None:
                pair = pairs[request_id] = _Pair(request_id)
                nursery.start_soon(_serve_pair, pair, open_port, pod, pairs)
            if kind not in ("data", "error") or kind in pair.streams:
                await stream.aclose()
                continue
            pair.streams[kind] = stream
            if kind == "error":
                stream.discard_input()
            if len(pair.streams) == 2:
                pair.complete.set()
        nursery.cancel_scope.cancel()


async def _serve_pair(pair: _Pair, open_port: OpenPort, pod: str, pairs: dict[str, _Pair]) -> None:
    try:
        with trio.move_on_after(STREAM_CREATION_TIMEOUT):
            await pair.complete.wait()
        if not pair.complete.is_set():
            await _fail(pair, "timed out waiting for streams")
            return
        data = pair.streams["data"]
        await forward(data.header("port") or "", data, pair.streams["error"], open_port, pod)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("port-forward stream broke", request=pair.request_id, error=str(exc))
    finally:
        pairs.pop(pair.request_id, None)
        for stream in pair.streams.values():
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _fail(pair: _Pair, message: str) -> None:
    error = pair.streams.get("error")
    if error is not None:
        await _fail_error(error, message)


async def forward(
    raw: str,
    data: trio.abc.HalfCloseableStream,
    error: Sink,
    open_port: OpenPort,
    pod: str,
) -> None:
    """One forwarded connection, whatever carries it: ``raw`` is the port as the client
    gave it, ``data`` the client's byte stream, ``error`` where problems are told (and
    which ends when the pod's side has). A WebSocket transport calls this per port channel
    pair."""
    try:
        port = int(raw)
        if not 0 < port < 65536:
            raise ValueError("out of range")
    except ValueError as exc:
        await _fail_error(error, f"error parsing port {raw!r}: {exc}")
        return
    try:
        async with open_port(port) as conn:
            await _copy_both_ways(data, error, conn, f"error forwarding port {port} to pod {pod}")
    except ContainerError as exc:
        await _fail_error(error, f"error forwarding port {port} to pod {pod}: {exc}")


async def _fail_error(error: Sink, message: str) -> None:
    """``message`` on the error stream, which then ends (unless the client is gone)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await error.send_all(message.encode())
        await error.send_eof()


async def _copy_both_ways(
    data: trio.abc.HalfCloseableStream,
    error: Sink,
    conn: trio.abc.HalfCloseableStream,
    failed: str,
) -> None:
    """Relay until both sides ended. The error stream ends as soon as the pod's side has
    (with what broke, if it did), so kubectl does not wait on it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_client_to_pod, data, conn)
        try:
            while chunk := await conn.receive_some(_CHUNK):
                await data.send_all(chunk)
            await data.send_eof()
            await error.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            nursery.cancel_scope.cancel()
            if not getattr(data, "reset_by_peer", False):
                await _fail_error(error, f"{failed}: {exc or type(exc).__name__}")


async def _client_to_pod(
    data: trio.abc.HalfCloseableStream, conn: trio.abc.HalfCloseableStream
) -> None:
    try:
        while chunk := await data.receive_some():
            await conn.send_all(chunk)
        await conn.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
