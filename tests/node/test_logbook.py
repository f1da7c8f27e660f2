"""``LogBook`` and ``stream_logs``: kubelet log semantics over "the last N lines, now"."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import trio

from vk_trio.node.logbook import LogBook, stream_logs
from vk_trio.node.provider import LogOptions, NotReady

T0 = _dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=_dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> _dt.datetime:
        return self.now


def texts(book: LogBook) -> list[str]:
    return [line.text for line in book.lines]


def test_a_moving_tail_window_adds_only_what_is_new() -> None:
    book = LogBook(_never)
    assert [line.text for line in book.add_snapshot("a\nb\nc\n")] == ["a", "b", "c"]
    # Vast returns the last three lines: "a" fell out of the window, "d" and "e" are new.
    assert [line.text for line in book.add_snapshot("c\nd\ne\n")] == ["d", "e"]
    assert texts(book) == ["a", "b", "c", "d", "e"]


def test_repeated_lines_are_not_mistaken_for_old_ones() -> None:
    book = LogBook(_never)
    book.add_snapshot("tick\ntick\n")
    assert [line.text for line in book.add_snapshot("tick\ntick\ntick\n")] == ["tick"]
    assert [line.text for line in book.add_snapshot("tick\ntick\ntick\n")] == []


def test_an_unrelated_snapshot_is_all_new_and_the_book_stays_bounded() -> None:
    book = LogBook(_never, max_lines=3)
    book.add_snapshot("a\nb\n")
    book.add_snapshot("x\ny\n")
    assert texts(book) == ["b", "x", "y"]
    assert book.last_seq == 3


async def test_concurrent_refreshes_share_one_fetch(autojump_clock: Any) -> None:
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await trio.sleep(1)
        return "line\n"

    book = LogBook(fetch)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: book.refresh(max_age=5.0))
    assert fetches == 1
    await trio.sleep(5)
    await book.refresh(max_age=5.0)
    assert fetches == 2


async def render(book: LogBook, options: LogOptions, clock: Clock) -> bytes:
    return b"".join([chunk async for chunk in stream_logs(book, options, clock=clock)])


async def test_since_tail_timestamps_and_limit() -> None:
    clock = Clock()
    book = LogBook(_never, clock=clock)
    book.add_snapshot("old\n")
    clock.now = T0 + _dt.timedelta(seconds=30)
    book.add_snapshot("old\nnew 1\nnew 2\n")
    clock.now = T0 + _dt.timedelta(seconds=40)
    assert await render(book, LogOptions(since_seconds=20), clock) == b"new 1\nnew 2\n"
    since = LogOptions(since_time=T0 + _dt.timedelta(seconds=1))
    assert await render(book, since, clock) == b"new 1\nnew 2\n"
    assert await render(book, LogOptions(tail_lines=1), clock) == b"new 2\n"
    assert await render(book, LogOptions(tail_lines=0), clock) == b""
    assert await render(book, LogOptions(limit_bytes=6), clock) == b"old\nne"
    stamped = await render(book, LogOptions(timestamps=True, tail_lines=1), clock)
    assert stamped == b"2026-11-30T12:00:30.000000000Z new 2\n"


async def test_follow_sends_only_new_lines_and_a_last_refresh_when_it_ends(
    autojump_clock: Any,
) -> None:
    snapshots = ["a\n", "a\nb\n", "a\nb\nc\n", "a\nb\nc\nd\n"]
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        return snapshots[min(calls, len(snapshots)) - 1]

    book = LogBook(fetch)
    await book.refresh()
    alive = iter([True, True, False])
    chunks = [
        chunk
        async for chunk in stream_logs(
            book, LogOptions(follow=True), alive=lambda: next(alive), interval=1.0
        )
    ]
    assert chunks == [b"a\n", b"b\n", b"c\n", b"d\n"]


async def test_follow_ends_when_the_provider_has_nothing_more(autojump_clock: Any) -> None:
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise NotReady("instance 7 is gone")
        return "a\n"

    book = LogBook(fetch)
    await book.refresh()
    chunks = [c async for c in stream_logs(book, LogOptions(follow=True), alive=lambda: True)]
    assert chunks == [b"a\n"]


async def _never() -> str:
    raise AssertionError("not fetched in this test")
