"""Kubelet log semantics over a provider that can only fetch "the last N lines, now".

Vast (and most rental APIs) hand out the container's recent output as one text snapshot, with
no timestamps and no cursor. ``LogBook`` turns successive snapshots into a growing list of
lines: each new snapshot is aligned with the previous one (the longest suffix of the old that
is a prefix of the new), only what follows the overlap is new, and every line is stamped with
the time the node first saw it. Those stamps are what ``timestamps=true`` prints and what
``sinceSeconds``/``sinceTime`` filter on; they are honest about what they are (first seen by
the node, at most one refresh interval late), since the provider has nothing better.

One book per container and instance, shared by every reader: followers call
``refresh(max_age=...)``, which fetches at most once per ``max_age`` however many of them
follow, so the provider's rate limit is spent once per interval, not once per ``kubectl``.
When the instance is replaced, the provider keeps the old book as the ``previous`` one; books
hold at most ``max_lines`` lines, so that stays small.

``stream_logs`` renders a book under ``LogOptions`` (tail, since, timestamps, limit) and, with
``follow``, keeps refreshing and sending only new lines until ``alive()`` turns false (then
one last refresh, so the final lines are not lost) or the client leaves (the server closes
the generator).
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

import trio
from loguru import logger

from vk_trio.node.provider import ContainerError, LogOptions

__all__ = ["DEFAULT_MAX_LINES", "FOLLOW_INTERVAL", "LogBook", "LogLine", "stream_logs"]

DEFAULT_MAX_LINES = 5000
"""Lines a book keeps; older ones are dropped (Vast itself returns at most ``tail`` lines)."""

FOLLOW_INTERVAL = 5.0
"""Seconds between refreshes while following: ``kubectl logs -f`` shows a new line at most
this late, and a node with many followers of one container still asks Vast once."""


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass(frozen=True)
class LogLine:
    seq: int
    """Position in the book's whole history (never reused, survives trimming)."""
    seen: _dt.datetime
    text: str


class LogBook:
    """The lines one container has printed so far, rebuilt from snapshots (module docstring).

    ``fetch`` returns the provider's current snapshot (full text) and raises the provider's
    ``ContainerError`` when there is nothing to fetch yet. ``clock`` is the wall clock for stamps.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[str]],
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        clock: Callable[[], _dt.datetime] = utcnow,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._last_snapshot: list[str] = []
        self._next_seq = 0
        self._fetched_at = -float("inf")
        self._lock = trio.Lock()

    @property
    def lines(self) -> list[LogLine]:
        return list(self._lines)

    def after(self, seq: int) -> list[LogLine]:
        """Lines with a sequence number above ``seq`` (what a follower has not seen)."""
        return [line for line in self._lines if line.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    async def refresh(self, *, max_age: float = 0.0) -> None:
        """Fetch a snapshot unless one younger than ``max_age`` seconds exists (or is being
        fetched: concurrent callers wait for it and share it)."""
        async with self._lock:
            if trio.current_time() - self._fetched_at < max_age:
                return
            text = await self._fetch()
            self._fetched_at = trio.current_time()
            self.add_snapshot(text)

    def add_snapshot(self, text: str) -> list[LogLine]:
        """Merge one snapshot; returns the lines it added."""
        snapshot = text.splitlines()
        start = _overlap(self._last_snapshot, snapshot)
        self._last_snapshot = snapshot
        now = self._clock()
        added = []
        for text_line in snapshot[start:]:
            line = LogLine(self._next_seq, now, text_line)
            self._next_seq += 1
            self._lines.append(line)
            added.append(line)
        return added


def _overlap(old: list[str], new: list[str]) -> int:
    """How many leading lines of ``new`` the end of ``old`` already had.

    A tail window moves forward: ``new == old[d:] + added``. The longest such overlap wins
    (a repeated line cannot make us print old lines twice); none means all of ``new`` is new.
    """
    if not old or not new:
        return 0
    last = old[-1]
    for size in range(min(len(old), len(new)), 0, -1):
        if new[size - 1] == last and old[len(old) - size :] == new[:size]:
            return size
    return 0


def _render(line: LogLine, timestamps: bool) -> bytes:
    text = line.text + "\n"
    if timestamps:
        # RFC 3339 with nanoseconds, as the kubelet writes them.
        stamp = line.seen.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        text = f"{stamp} {text}"
    return text.encode()


def select(lines: list[LogLine], options: LogOptions, now: _dt.datetime) -> list[LogLine]:
    """The lines a non-follow request shows: since, then tail (``limitBytes`` is applied on
    the rendered bytes by ``stream_logs``)."""
    cutoff = options.cutoff(now)
    if cutoff is not None:
        lines = [line for line in lines if line.seen >= cutoff]
    if options.tail_lines is not None:
        lines = lines[len(lines) - options.tail_lines :] if options.tail_lines else []
    return lines


async def stream_logs(
    book: LogBook,
    options: LogOptions,
    *,
    alive: Callable[[], bool] = lambda: False,
    interval: float = FOLLOW_INTERVAL,
    clock: Callable[[], _dt.datetime] = utcnow,
) -> AsyncIterator[bytes]:
    """The response body for ``options`` over ``book`` (already refreshed once by the caller,
    so that its errors came before the response started).

    With ``follow``: every ``interval`` seconds refresh (shared with other followers) and send
    the lines not sent yet, until ``alive()`` is false; then one last refresh and stop.
    ``limitBytes`` ends the stream once reached, cutting the last line if it must.
    """
    budget = options.limit_bytes

    def cut(chunk: bytes) -> bytes:
        nonlocal budget
        if budget is None:
            return chunk
        chunk = chunk[:budget]
        budget -= len(chunk)
        return chunk

    shown = select(book.lines, options, clock())
    seq = book.last_seq
    chunk = cut(b"".join(_render(line, options.timestamps) for line in shown))
    if chunk:
        yield chunk
    if not options.follow:
        return
    async with aclosing(_new_lines(book, seq, alive, interval)) as batches:
        async for new in batches:
            if budget == 0:
                return
            chunk = cut(b"".join(_render(line, options.timestamps) for line in new))
            if chunk:
                yield chunk


async def _new_lines(
    book: LogBook, seq: int, alive: Callable[[], bool], interval: float
) -> AsyncGenerator[list[LogLine], None]:
    """The lines after ``seq`` as they arrive: a refresh every ``interval`` seconds (shared
    with other followers) until ``alive()`` is false, then one last refresh."""
    while True:
        ending = not alive()
        if not ending:
            await trio.sleep(interval)
        try:
            await book.refresh(max_age=0.0 if ending else interval)
        except ContainerError:
            return  # nothing more to fetch (the instance is gone): what was sent is all
        except Exception as exc:
            # A provider hiccup (timeout, 5xx after its retries): try again next interval;
            # a container that ended turns ``alive()`` false and ends the loop.
            logger.debug("log follow: refresh failed, trying again", error=str(exc))
            if ending:
                return
            continue
        new = book.after(seq)
        if new:
            seq = new[-1].seq
            yield new
        if ending:
            return
