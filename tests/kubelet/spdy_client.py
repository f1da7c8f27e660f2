"""A SPDY/3.1 client for the streaming tests, built from the ``spdy`` module's frames and
header blocks: it opens streams as kubectl's spdystream does (SYN_STREAM with a
``streamType`` header), sends DATA, echoes the server's PINGs, and records what comes back
per stream (reply, data, FIN, reset)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import trio

from vk_trio.kubelet.spdy import (
    Data,
    FrameReader,
    GoAwayFrame,
    HeaderCompressor,
    HeaderDecompressor,
    Ping,
    RstStream,
    SynReply,
    SynStream,
    serialize,
)


class SpdyClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._reader = FrameReader()
        self._deflate = HeaderCompressor()
        self._inflate = HeaderDecompressor()
        self._next_id = 1
        self.replied: set[int] = set()
        self.data: dict[int, bytearray] = defaultdict(bytearray)
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.goaway = False
        self.closed = False

    async def open(self, stream_type: str, **headers: str) -> int:
        sid, self._next_id = self._next_id, self._next_id + 2
        block = self._deflate.compress(
            [("streamtype", stream_type), *((k.lower(), v) for k, v in headers.items())]
        )
        await self.stream.send_all(serialize(SynStream(sid, block)))
        return sid

    async def send(self, sid: int, data: bytes, *, fin: bool = False) -> None:
        await self.stream.send_all(serialize(Data(sid, data, fin=fin)))

    async def end(self, sid: int) -> None:
        await self.send(sid, b"", fin=True)

    async def read_until(self, done: Callable[[], bool], *, within: float = 5.0) -> None:
        """Read frames until ``done()`` (or the server closes)."""
        with trio.fail_after(within):
            while not done() and not self.closed:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.closed = True
                    return
                self._reader.feed(bytes(data))
                while (frame := self._reader.next_frame()) is not None:
                    await self._handle(frame)

    async def _handle(self, frame: object) -> None:
        if isinstance(frame, SynReply):
            self._inflate.decompress(frame.header_block)
            self.replied.add(frame.stream_id)
        elif isinstance(frame, Data):
            self.data[frame.stream_id] += frame.data
            if frame.fin:
                self.ended.add(frame.stream_id)
        elif isinstance(frame, RstStream):
            self.reset.add(frame.stream_id)
        elif isinstance(frame, Ping):
            await self.stream.send_all(serialize(frame))
        elif isinstance(frame, GoAwayFrame):
            self.goaway = True
