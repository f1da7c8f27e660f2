"""The WebSocket transport against a real wsproto client on loopback TCP.

The server side parses the request with h11 and switches with ``h11_switch``, as the kubelet
server will; each test gives the session's body.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import h11
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

from vk_trio.kubelet.streaming.websocket import protocol as p
from vk_trio.kubelet.streaming.websocket import transport as t

Scenario = Callable[[trio.SocketStream, bytes, p.ChannelProtocol | p.Tunnel], Awaitable[None]]


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request:
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request


@asynccontextmanager
async def server(
    scenario: Scenario, select: t.Selector = p.select_remotecommand
) -> AsyncIterator[tuple[int, list[BaseException]]]:
    """A loopback server answering one upgrade per connection; yields its port and errors."""
    errors: list[BaseException] = []
    finished: list[trio.Event] = []

    async def handle(stream: trio.SocketStream) -> None:
        done = trio.Event()
        finished.append(done)
        try:
            conn = h11.Connection(h11.SERVER)
            request = await _read_request(stream, conn)
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            offered = p.offered_protocols(headers.get("sec-websocket-protocol"))
            decision = p.check_upgrade(request.method.decode(), headers) or select(offered)
            if isinstance(decision, p.Rejection):
                await stream.send_all(decision.to_bytes())
                return
            name = decision.subprotocol if isinstance(decision, p.Tunnel) else decision.name
            data, trailing = t.h11_switch(conn, p.accept(headers, name))
            await stream.send_all(data)
            await scenario(stream, trailing, decision)
        except Exception as exc:  # surfaced by the test, not swallowed by serve_tcp
            errors.append(exc)
            raise
        finally:
            await trio.aclose_forcefully(stream)
            done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], errors
        with trio.move_on_after(5):  # let each session finish before its results are checked
            for done in list(finished):
                await done.wait()
        nursery.cancel_scope.cancel()


class Client:
    """A WebSocket client on wsproto, reading only when asked to."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()

    async def connect(self, subprotocols: Sequence[str], target: str = "/exec") -> Event:
        await self.stream.send_all(
            self.ws.send(Request(host="127.0.0.1", target=target, subprotocols=list(subprotocols)))
        )
        return await self.event()

    async def event(self) -> Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def message(self) -> bytes | str:
        parts: list[bytes | str] = []
        while True:
            event = await self.event()
            assert isinstance(event, Message), event
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, TextMessage):
                    return "".join(str(x) for x in parts)
                return b"".join(x.encode() if isinstance(x, str) else x for x in parts)

    async def send(self, data: bytes | str) -> None:
        event = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        await self.stream.send_all(self.ws.send(event))


@asynccontextmanager
async def client(port: int) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield Client(stream)


async def _idle(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
    async with t.open_websocket(stream, trailing=trailing) as ws:
        await ws.receive_message()


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], "v5.channel.k8s.io"),
        (["base64.channel.k8s.io", "v4.channel.k8s.io"], "base64.channel.k8s.io"),
        ([], None),
    ],
)
async def test_handshake_negotiates_the_subprotocol(offered: list[str], chosen: str | None) -> None:
    async with server(_idle) as (port, errors), client(port) as c:
        accepted = await c.connect(offered)
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == chosen
    assert not errors


async def test_handshake_with_nothing_known_is_403_like_the_apiserver() -> None:
    async with server(_idle) as (port, _), client(port) as c:
        refused = await c.connect(["v3.channel.k8s.io", "foo"])
        assert isinstance(refused, RejectConnection)
        assert refused.status_code == 403


async def test_raw_handshake_refuses_and_accepts() -> None:
    """``handshake`` writes the answer itself, for callers without h11."""
    results: list[object] = []

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request = await _read_request(stream, conn)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        results.append(await t.handshake(stream, "GET", headers, p.select_port_forward))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with client(port) as c:
            assert isinstance(await c.connect(["v5.channel.k8s.io"]), RejectConnection)
        async with client(port) as c:
            accepted = await c.connect(["SPDY/3.1+portforward.k8s.io"], "/portForward")
            assert isinstance(accepted, AcceptConnection)
            assert accepted.subprotocol == "SPDY/3.1+portforward.k8s.io"
        nursery.cancel_scope.cancel()
    assert results == [None, p.Tunnel("SPDY/3.1+portforward.k8s.io", "portforward.k8s.io")]


async def test_exec_channels_both_ways_v5() -> None:
    seen: list[object] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_remotecommand(
            stream, decision, stdin=True, stdout=True, stderr=True, trailing=trailing
        ) as session:
            seen.append(await session.receive(p.STDIN))
            await session.send(p.STDOUT, b"out")
            await session.send(p.STDERR, b"err")
            seen.append(await session.receive(p.STDIN))  # CLOSE: end of stdin
            seen.extend(p.ResizeDecoder().feed(await session.receive(p.RESIZE)))
            await session.write_status({"metadata": {}, "status": "Success"})

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v5.channel.k8s.io"]), AcceptConnection)
        assert await c.message() == b"\x01"  # the session is up: empty stdout message
        await c.send(b"\x00hello")
        assert await c.message() == b"\x01out"
        assert await c.message() == b"\x02err"
        await c.send(bytes([255, 0]))
        await c.send(b'\x04{"Width":80,"Height":24}')
        status = await c.message()
        assert isinstance(status, bytes)
        assert status[0] == 3
        assert json.loads(status[1:]) == {"metadata": {}, "status": "Success"}
        closing = await c.event()
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1000
        await c.stream.send_all(c.ws.send(closing.response()))
    assert not errors
    assert seen == [b"hello", b"", p.TerminalSize(80, 24)]


async def test_exec_base64_and_the_first_message_without_stdout() -> None:
    seen: list[bytes] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_remotecommand(
            stream, decision, stdin=True, stdout=False, stderr=True, trailing=trailing
        ) as session:
            seen.append(await session.receive(p.STDIN))
            await session.send(p.STDOUT, b"dropped: stdout was not requested")
            await session.send(p.STDERR, b"\xff")

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v4.base64.channel.k8s.io"]), AcceptConnection)
        assert await c.message() == "2"  # stderr is the lowest writable output
        await c.send("0Zm9vCg==")
        assert await c.message() == "2/w=="
    assert not errors
    assert seen == [b"foo\n"]


async def test_first_frame_in_the_same_packet_as_the_request_is_not_lost() -> None:
    """h11 reads past the request; ``h11_switch`` hands those bytes to the WebSocket."""
    seen: list[bytes] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_remotecommand(
            stream, decision, stdin=True, stdout=True, stderr=False, trailing=trailing
        ) as session:
            seen.append(await session.receive(p.STDIN))

    async with server(scenario) as (port, errors), client(port) as c:
        request = c.ws.send(Request(host="h", target="/exec", subprotocols=["v5.channel.k8s.io"]))
        frame = FrameProtocol(client=True, extensions=[]).send_data(b"\x00early", True)
        await c.stream.send_all(request + frame)
        assert isinstance(await c.event(), AcceptConnection)
        assert await c.message() == b"\x01"
    assert not errors
    assert seen == [b"early"]


async def test_port_forward_channels_and_port_prefixes() -> None:
    seen: list[bytes] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_port_forward(stream, decision, [8080, 80], trailing=trailing) as s:
            seen.append(await s.receive(2))
            await s.send(2, b"reply")
            await s.send(3, b"error forwarding port 80")

    async with server(scenario, p.select_port_forward) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v4.channel.k8s.io"], "/portForward"), AcceptConnection)
        prefixes = [await c.message() for _ in range(4)]
        assert prefixes == [b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02P\x00", b"\x03P\x00"]
        await c.send(b"\x02GET / HTTP/1.0\r\n\r\n")
        assert await c.message() == b"\x02reply"
        assert await c.message() == b"\x03error forwarding port 80"
    assert not errors
    assert seen == [b"GET / HTTP/1.0\r\n\r\n"]


async def test_tunnel_is_a_byte_stream_over_binary_messages() -> None:
    seen: list[bytes] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.Tunnel)
        async with t.open_tunnel(stream, trailing=trailing) as tunnel:
            seen.append(await tunnel.receive_some(3))
            seen.append(await tunnel.receive_some())
            await tunnel.send_all(b"\x80\x03\x00\x02")  # SPDY bytes go out as they are
            seen.append(await tunnel.receive_some())

    async with server(scenario, p.select_port_forward) as (port, errors), client(port) as c:
        accepted = await c.connect(["SPDY/3.1+portforward.k8s.io"], "/portForward")
        assert isinstance(accepted, AcceptConnection)
        await c.send(b"")  # an empty message is not the end of the stream
        await c.send(b"abcdef")
        assert await c.message() == b"\x80\x03\x00\x02"
        await c.stream.send_all(c.ws.send(CloseConnection(1000)))
        assert isinstance(await c.event(), CloseConnection)
    assert not errors
    assert seen == [b"abc", b"def", b""]


async def test_ping_is_answered_and_client_close_ends_every_input() -> None:
    seen: list[object] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_remotecommand(
            stream, decision, stdin=True, stdout=True, stderr=False, trailing=trailing
        ) as session:
            seen.append(await session.receive(p.STDIN))
            seen.append(await session.receive(p.RESIZE))
            seen.append(session.ws.close_code)
            with pytest.raises(trio.BrokenResourceError):
                await session.send(p.STDOUT, b"too late")

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v5.channel.k8s.io"]), AcceptConnection)
        assert await c.message() == b"\x01"
        await c.stream.send_all(c.ws.send(Ping(b"are you there")))
        assert await c.event() == Pong(b"are you there")
        await c.stream.send_all(c.ws.send(CloseConnection(1000, "bye")))
        reply = await c.event()
        assert isinstance(reply, CloseConnection)
        assert reply.code == 1000
    assert not errors
    assert seen == [b"", b"", 1000]


async def test_malformed_close_signal_closes_with_protocol_error() -> None:
    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        async with t.open_remotecommand(
            stream, decision, stdin=True, stdout=True, stderr=False, trailing=trailing
        ) as session:
            assert await session.receive(p.STDIN) == b""

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v5.channel.k8s.io"]), AcceptConnection)
        assert await c.message() == b"\x01"
        await c.send(bytes([255, 0, 1]))
        closing = await c.event()
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1002
        await c.stream.send_all(c.ws.send(closing.response()))
    assert not errors


async def test_idle_connection_is_dropped() -> None:
    expired: list[bool] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        async with t.open_websocket(stream, trailing=trailing, idle_timeout=0.3) as ws:
            try:
                await ws.receive_message()
            finally:
                expired.append(ws.idle_expired)

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v5.channel.k8s.io"]), AcceptConnection)
        with trio.fail_after(5):
            gone = await c.event()
        assert isinstance(gone, CloseConnection)
        assert gone.code == 1006  # dropped, no close frame: the peer may be unreachable
    assert not errors
    assert expired == [True]


async def test_client_that_never_reads_blocks_the_sender_at_a_bound() -> None:
    """64 MiB of stdout to a client that reads nothing: the sender stops once the socket
    buffers are full (memory does not grow with what is left), and idling ends it."""
    total = 64 * 1024 * 1024
    sent: list[int] = [0]
    finished: list[bool] = []

    async def scenario(stream: trio.SocketStream, trailing: bytes, decision: object) -> None:
        assert isinstance(decision, p.ChannelProtocol)
        chunk = b"x" * t.MAX_FRAME
        async with t.open_remotecommand(
            stream,
            decision,
            stdin=False,
            stdout=True,
            stderr=False,
            trailing=trailing,
            idle_timeout=1.0,
        ) as session:
            while sent[0] < total:
                await session.send(p.STDOUT, chunk)
                sent[0] += len(chunk)
            finished.append(True)

    async with server(scenario) as (port, errors), client(port) as c:
        assert isinstance(await c.connect(["v5.channel.k8s.io"]), AcceptConnection)
        await trio.sleep(2.5)  # reading nothing
    assert not errors
    assert finished == []
    assert 0 < sent[0] < total // 2
