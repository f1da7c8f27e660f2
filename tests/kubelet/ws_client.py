"""A WebSocket client for the kubelet streaming tests, on wsproto over TLS: connects with a
bearer token and subprotocols, reads whole messages per channel, and (``WsStream``) carries a
tunneled SPDY session in binary messages for ``SpdyClient``."""

from __future__ import annotations

import base64
import ssl
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class WsClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.channels: dict[int, bytearray] = defaultdict(bytearray)
        self.close_code: int | None = None

    async def connect(self, target: str, subprotocols: Sequence[str], token: str) -> Event:
        request = Request(
            host="127.0.0.1",
            target=target,
            subprotocols=list(subprotocols),
            extra_headers=[(b"authorization", f"Bearer {token}".encode())],
        )
        await self.stream.send_all(self.ws.send(request))
        event = await self.event()
        self.rejected_body = b""
        if isinstance(event, RejectConnection) and event.has_body:
            while True:
                more = await self.event()
                assert isinstance(more, RejectData), more
                self.rejected_body += more.data
                if more.body_finished:
                    break
        return event

    async def event(self) -> Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(bytes(data) or None)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def message(self) -> bytes | str | None:
        """The next whole message; None at the server's close (answered)."""
        parts: list[bytes | str] = []
        while True:
            event = await self.event()
            if isinstance(event, CloseConnection):
                self.close_code = event.code
                if self.ws.state.name == "REMOTE_CLOSING":
                    await self.stream.send_all(self.ws.send(event.response()))
                return None
            if isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
                continue
            assert isinstance(event, Message), event
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, TextMessage):
                    return "".join(str(x) for x in parts)
                return b"".join(x if isinstance(x, bytes) else x.encode() for x in parts)

    async def send(self, data: bytes | str) -> None:
        event = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        await self.stream.send_all(self.ws.send(event))

    async def read_channels(self, *, base64_text: bool = False, within: float = 10) -> None:
        """Collect every channel's bytes until the server closes."""
        with trio.fail_after(within):
            while (message := await self.message()) is not None:
                if base64_text:
                    assert isinstance(message, str)
                    channel, payload = int(message[0]), base64.b64decode(message[1:])
                else:
                    assert isinstance(message, bytes)
                    channel, payload = message[0], message[1:]
                self.channels[channel] += payload


class WsStream(trio.abc.Stream):
    """Binary messages as a byte stream: the client's side of a tunneled SPDY session."""

    def __init__(self, client: WsClient) -> None:
        self.client = client

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.client.send(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        message = await self.client.message()
        if message is None:
            return b""
        assert isinstance(message, bytes)
        return message

    async def aclose(self) -> None:
        await self.client.stream.aclose()


@asynccontextmanager
async def ws_client(url: str, context: ssl.SSLContext) -> AsyncIterator[WsClient]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=context)
    async with stream:
        yield WsClient(stream)


__all__ = ["AcceptConnection", "RejectConnection", "WsClient", "WsStream", "ws_client"]
