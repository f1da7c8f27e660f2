"""SPDY/3 header blocks: the name/value block layout and its zlib compression.

A block is ``count`` then ``count`` times (name length, name, value length, value), all lengths
32-bit big-endian; a name appears once and several values are joined with NUL. The whole
block is deflated with a dictionary fixed by the spec, through ONE zlib stream per direction
for the connection's life (each block ends with a ``Z_SYNC_FLUSH`` so the peer can inflate it
at once): so blocks must be compressed in the order they are sent and inflated in the order
they arrive, and a block that fails to inflate leaves the stream unusable for every later
block, which is why that is a connection error and not a stream error.

Headers are a tuple of ``(name, value)`` pairs, as h11 and h2 give them: a name with several
values appears once per value. Text is Latin-1 both ways, so any byte survives a round trip.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

Headers = tuple[tuple[str, str], ...]

#: Largest inflated header block accepted: Kubernetes' blocks are a few hundred bytes, and a
#: bound keeps a tiny compressed block from inflating into gigabytes.
MAX_HEADER_BLOCK = 256 * 1024

# The SPDY/3 dictionary (draft 3 §2.6.10.1): the spec lists it as bytes; it is a run of
# 32-bit-length-prefixed words followed by a plain tail, written that way here so it can be
# read. Its length (1423) and checksum are pinned by the tests against the spec's bytes.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status |200 OK| version HTTP/1.1 url public set-cookie keep-alive origin"
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _words() -> list[str]:
    # "200 OK" is the one word with a space in it, so it is fenced with bars above.
    head, fenced, tail = _DICTIONARY_WORDS.partition("|200 OK|")
    return [*head.split(), fenced.strip("|"), *tail.split()]


SPDY3_DICTIONARY = b"".join(
    len(w).to_bytes(4, "big") + w.encode("ascii") for w in _words()
) + _DICTIONARY_TAIL.encode("ascii")

_U32 = struct.Struct(">I")


class HeaderBlockError(Exception):
    """A header block that does not inflate or does not parse: a connection error."""


def encode_header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """The uncompressed block: names lowercased (SPDY requires it) and merged, values of one
    name NUL-joined in the order given. Raises ValueError for what the block cannot carry."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        if not name:
            raise ValueError("a SPDY header name is never empty")
        if "\x00" in name or "\x00" in value:
            raise ValueError(f"header {name!r} contains NUL, SPDY's value separator")
        merged.setdefault(name.lower(), []).append(value)
    parts = [_U32.pack(len(merged))]
    for name, values in merged.items():
        for text in (name, "\x00".join(values)):
            raw = text.encode("latin-1")
            parts += [_U32.pack(len(raw)), raw]
    return b"".join(parts)


class _BlockReader:
    """Length-prefixed fields out of one inflated block, each read checked against its end."""

    def __init__(self, block: bytes) -> None:
        self._block = block
        self._offset = 0

    def u32(self) -> int:
        if self._offset + 4 > len(self._block):
            raise HeaderBlockError("header block ends inside a length")
        (value,) = _U32.unpack_from(self._block, self._offset)
        self._offset += 4
        return int(value)

    def field(self) -> str:
        length = self.u32()
        if self._offset + length > len(self._block):
            raise HeaderBlockError("header block ends inside a name or value")
        raw = self._block[self._offset : self._offset + length]
        self._offset += length
        return raw.decode("latin-1")

    @property
    def done(self) -> bool:
        return self._offset == len(self._block)


def decode_header_block(block: bytes) -> Headers:
    """The pairs of one uncompressed block. Names are lowercased (spdystream writes them
    lowercase; a peer that does not is tolerated rather than refused, as spdystream does);
    an empty name, a repeated name or bytes left over are a HeaderBlockError."""
    reader = _BlockReader(block)
    count = reader.u32()
    if count > len(block) // 8:
        raise HeaderBlockError(f"header block claims {count} pairs in {len(block)} bytes")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(count):
        name = reader.field().lower()
        value = reader.field()
        if not name or name in seen:
            raise HeaderBlockError(f"header name {name!r} is empty or repeated")
        seen.add(name)
        pairs += [(name, part) for part in value.split("\x00")]
    if not reader.done:
        raise HeaderBlockError("bytes after the last header pair")
    return tuple(pairs)


class HeaderCompressor:
    """Our direction's zlib stream: one per connection, a sync flush per block."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=SPDY3_DICTIONARY)

    def compress(self, headers: Iterable[tuple[str, str]]) -> bytes:
        raw = encode_header_block(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The peer's zlib stream. zlib asks for the dictionary (its ID is in the stream header)
    at the first block, and Python's decompressobj supplies ``zdict`` when it does."""

    def __init__(self, max_block: int = MAX_HEADER_BLOCK) -> None:
        self._inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._max_block = max_block

    def decompress(self, block: bytes) -> Headers:
        """Raises HeaderBlockError; after one, this stream is out of step for good."""
        try:
            raw = self._inflate.decompress(block, self._max_block)
        except zlib.error as exc:
            raise HeaderBlockError(f"header block does not inflate: {exc}") from exc
        if self._inflate.unconsumed_tail:
            raise HeaderBlockError(f"header block inflates beyond {self._max_block} bytes")
        return decode_header_block(raw)
