"""A container's output in files, as the CRI runtimes keep it and the kubelet reads it.

Each line is ``<RFC 3339 time> <stream> <tag> <content>``: the tag ``F`` ends a line, ``P``
is a piece of one (a line longer than 16 KiB, as containerd and CRI-O split them, or output
with no newline yet, written at once so that a process that prints a prompt and waits is seen
waiting). Files, per container directory:

- ``current.log``: the run now going (or the last one, once it ended), rotated to
  ``current.log.1`` when it would grow past ``max_bytes`` (one rotated file kept, older
  dropped);
- ``previous.log``: the run before, only its last file, as ``kubectl logs --previous`` shows
  one run.

So a container uses at most about ``3 * max_bytes`` of disk (a follower still reading a
dropped file holds it open a little longer).

Writes come from the trio thread and are cheap: a buffered append and a flush. Readers read
the files in worker threads, and a follower that has read everything waits on a
:class:`trio.Event` that every write sets, so it sees a new line at once without polling.
A rotation under a follower is safe: it holds the old file open, reads it to the end, then
opens the next generation.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

import trio

from vk_trio.agent.protocol import Logs

__all__ = ["MAX_LINE", "ContainerLogs", "format_time", "parse_time"]

MAX_LINE = 16 * 1024
"""The runtimes' longest log entry; a longer line becomes ``P`` pieces and a final ``F``."""
CHUNK = 64 * 1024
"""The most a reader yields at once (whole entries)."""
READ = 1024 * 1024
"""The most a follower reads from a file in one worker-thread hop."""

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")


def format_time(ns: int) -> bytes:
    """Nanoseconds since the epoch as the files hold them: UTC, always nine digits, so that
    times compare as byte strings."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{fraction:09d}Z".encode()


def parse_time(text: str) -> int:
    """RFC 3339 (any offset, any digits of fraction) as nanoseconds since the epoch."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid RFC 3339 time {text!r}")
    date, clock, fraction, zone = match.groups()
    offset = "+00:00" if zone in ("Z", "z") else zone
    seconds = int(datetime.fromisoformat(f"{date}T{clock}{offset}").timestamp())
    return seconds * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


def _pieces(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(tag, content)`` entries for one write: whole lines ``F`` (split into ``P`` pieces
    past :data:`MAX_LINE`), a trailing piece without newline ``P``."""
    *lines, rest = data.split(b"\n")
    for line in lines:
        while len(line) > MAX_LINE:
            yield b"P", line[:MAX_LINE]
            line = line[MAX_LINE:]
        yield b"F", line
    for start in range(0, len(rest), MAX_LINE):
        yield b"P", rest[start : start + MAX_LINE]


class _Output:
    """The kubelet's per-entry filters (``since``, ``timestamps``, ``limit_bytes``) and the
    rendering: content, newline restored for ``F``, chunked by whole entries."""

    def __init__(self, request: Logs) -> None:
        since = request.since_time
        self._since = format_time(parse_time(since)) if since else None
        self._timestamps = request.timestamps
        self._left = request.limit_bytes
        self.done = self._left is not None and self._left <= 0

    def render(self, lines: Iterable[bytes]) -> list[bytes]:
        """Chunks of at most :data:`CHUNK` bytes (but whole entries) for these file lines."""
        chunks: list[bytes] = []
        pending: list[bytes] = []
        size = 0
        for line in lines:
            piece = self._entry(line)
            if piece is None:
                continue
            if size + len(piece) > CHUNK and pending:
                chunks.append(b"".join(pending))
                pending, size = [], 0
            pending.append(piece)
            size += len(piece)
            if self.done:
                break
        if pending:
            chunks.append(b"".join(pending))
        return chunks

    def _entry(self, line: bytes) -> bytes | None:
        if self.done:
            return None
        parts = line.split(b" ", 3)
        if len(parts) != 4 or parts[2] not in (b"F", b"P"):
            return None
        stamp, _stream, tag, content = parts
        if self._since is not None and stamp < self._since:
            return None
        piece = content + b"\n" if tag == b"F" else content
        if self._timestamps:
            piece = stamp + b" " + piece
        if self._left is not None:
            piece = piece[: self._left]
            self._left -= len(piece)
            self.done = self._left <= 0
        return piece


def _tail(lines: list[bytes], tail: int | None) -> list[bytes]:
    """The last ``tail`` entries (None: all; 0: none), counted as the kubelet does: entries
    in the file, so a split line's pieces count one each."""
    if tail is None:
        return lines
    return lines[-tail:] if tail > 0 else []


def _read_all(handles: list[BinaryIO]) -> tuple[list[bytes], bytes]:
    """Every complete line of the handles in order, and what follows the last newline of
    the last one (an entry being written right now)."""
    data = b"".join(handle.read() for handle in handles)
    *lines, rest = data.split(b"\n")
    return lines, rest


class ContainerLogs:
    """One container's output across its runs: what the runner writes, what ``kubectl
    logs`` reads (``read``), with the kubelet's options."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        name: str = "",
        pod: str = "",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._dir = directory
        self._current = directory / "current.log"
        self._rotated = directory / "current.log.1"
        self._previous = directory / "previous.log"
        self._max = max_bytes
        self._name = name
        self._pod = pod
        self._clock = clock
        """Nanoseconds since the epoch, for the entries' times (a test's clock)."""
        self._handle: BinaryIO | None = None
        self._size = 0
        self._generation = 0
        """Which file ``current.log`` is: +1 on every rotation and every run."""
        self._run = 0
        self._running = False
        self._changed = trio.Event()

    # -- writing (the runner) ----------------------------------------------------------------

    async def start_run(self) -> None:
        """A new run of the process: the last run's file becomes ``previous.log`` (its
        rotated part is dropped) and ``current.log`` starts empty."""
        self._close()
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._current.exists():
            os.replace(self._current, self._previous)
        self._rotated.unlink(missing_ok=True)
        self._open()
        self._run += 1
        self._running = True
        self._notify()

    async def write(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        """Append the process's output as entries, rotating between them. It never yields
        to the scheduler, so a write is never half done by a cancellation. A write before
        any :meth:`start_run` starts the first run; one after :meth:`end_run` (output drained
        late from the pipe) still belongs to the run that ended."""
        if not data:
            return
        if self._handle is None and self._run == 0:
            await self.start_run()
        elif self._handle is None:
            self._open(new_file=False)  # output drained after end_run: still that run's
        prefix = format_time(self._clock()) + b" " + stream.encode() + b" "
        for tag, content in _pieces(data):
            entry = prefix + tag + b" " + content + b"\n"
            if self._size and self._size + len(entry) > self._max:
                self._rotate()
            assert self._handle is not None
            self._handle.write(entry)
            self._size += len(entry)
        assert self._handle is not None
        self._handle.flush()
        self._notify()

    async def end_run(self) -> None:
        """The process ended: the file is closed and followers finish once they have read
        it all."""
        self._close()
        self._running = False
        self._notify()

    def _open(self, *, new_file: bool = True) -> None:
        self._handle = self._current.open("ab")
        self._size = self._handle.tell()
        if new_file:
            self._generation += 1

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _rotate(self) -> None:
        self._close()
        os.replace(self._current, self._rotated)
        self._open()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- reading (kubectl logs) --------------------------------------------------------------

    def read(self, request: Logs) -> AsyncGenerator[bytes, None]:
        """The output under the kubelet's options, in chunks of whole entries. With
        ``follow``, new output follows until the run ends or the reader stops. Close the
        iterator when done with it (``contextlib.aclosing``): it holds files open.

        Raises LookupError (the kubelet's message) for ``previous`` with no previous run,
        and ValueError for a ``since_time`` that is no RFC 3339 time."""
        output = _Output(request)
        if request.previous:
            if not self._previous.exists():
                raise LookupError(
                    f'previous terminated container "{self._name}" in pod "{self._pod}" not found'
                )
            return self._read_previous(request, output)
        return self._read_current(request, output)

    async def _read_previous(self, request: Logs, output: _Output) -> AsyncGenerator[bytes, None]:
        handles: list[BinaryIO] = [self._previous.open("rb")]
        try:
            lines, _rest = await trio.to_thread.run_sync(_read_all, handles)
        finally:
            handles[0].close()
        for chunk in output.render(_tail(lines, request.tail_lines)):
            yield chunk

    def _open_current(self) -> list[BinaryIO]:
        """The current run's files, opened together on the trio thread so that no rotation
        falls between them."""
        handles: list[BinaryIO] = []
        for path in (self._rotated, self._current):
            try:
                handles.append(path.open("rb"))
            except FileNotFoundError:
                continue
        return handles

    async def _read_current(self, request: Logs, output: _Output) -> AsyncGenerator[bytes, None]:
        run, generation = self._run, self._generation
        handles = self._open_current()
        try:
            lines, rest = await trio.to_thread.run_sync(_read_all, handles)
            for chunk in output.render(_tail(lines, request.tail_lines)):
                yield chunk
            if not request.follow or output.done or not handles:
                return
            handle = handles.pop()
            async for chunk in self._follow(handle, run, generation, rest, output):
                yield chunk
        finally:
            for handle in handles:
                handle.close()

    async def _follow(
        self, handle: BinaryIO, run: int, generation: int, rest: bytes, output: _Output
    ) -> AsyncGenerator[bytes, None]:
        """New entries as they are written, across rotations, until the run ends."""
        try:
            while not output.done:
                changed = self._changed
                data = await trio.to_thread.run_sync(handle.read, READ)
                if data:
                    *lines, rest = (rest + data).split(b"\n")
                    for chunk in output.render(lines):
                        yield chunk
                elif generation < self._generation and run == self._run:
                    handle.close()
                    handle, generation = self._next_file(generation)
                    rest = b""
                elif run != self._run or not self._running:
                    return
                else:
                    await changed.wait()
        finally:
            handle.close()

    def _next_file(self, generation: int) -> tuple[BinaryIO, int]:
        """The file after ``generation`` in this run: ``current.log`` or, when the writer
        rotated again meanwhile, ``current.log.1`` (a generation already dropped is lost)."""
        if generation + 1 >= self._generation:
            return self._current.open("rb"), self._generation
        return self._rotated.open("rb"), self._generation - 1
