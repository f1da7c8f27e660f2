"""A container's output in CRI-format files, read back with the kubelet's options."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from vk_trio.agent.logfiles import MAX_LINE, ContainerLogs, format_time, parse_time
from vk_trio.agent.protocol import Logs

T0 = parse_time("2026-12-07T15:04:05Z")
SECOND = 1_000_000_000
ENTRY = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] .*")


class Clock:
    """A second a tick, from T0."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        now = self.now
        self.now += SECOND
        return now


def logs(tmp_path: Path, clock: Callable[[], int] | None = None, **kw: int) -> ContainerLogs:
    return ContainerLogs(
        tmp_path / "c", name="app", pod="default/web", clock=clock or Clock(), **kw
    )


async def read(container: ContainerLogs, request: Logs | None = None) -> bytes:
    chunks = []
    async with aclosing(container.read(request or Logs(container="app"))) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    return b"".join(chunks)


def entries(tmp_path: Path, name: str = "current.log") -> list[bytes]:
    return (tmp_path / "c" / name).read_bytes().splitlines()


def disk_use(tmp_path: Path) -> int:
    return sum(path.stat().st_size for path in (tmp_path / "c").iterdir())


async def test_entries_are_in_the_cri_format(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.start_run()
    await container.write("stdout", b"hello\n")
    await container.write("stderr", b"oops\n")
    lines = entries(tmp_path)
    assert lines == [
        b"2026-12-07T15:04:05.000000000Z stdout F hello",
        b"2026-12-07T15:04:06.000000000Z stderr F oops",
    ]
    assert all(ENTRY.fullmatch(line) for line in lines)
    assert await read(container) == b"hello\noops\n"


async def test_partial_line_completed_by_later_data(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.write("stdout", b"Loading...")
    await container.write("stdout", b" done\nnext\n\n")
    tags = [line.split(b" ", 3)[2:] for line in entries(tmp_path)]
    assert tags == [[b"P", b"Loading..."], [b"F", b" done"], [b"F", b"next"], [b"F", b""]]
    assert await read(container) == b"Loading... done\nnext\n\n"


async def test_long_lines_are_split_as_the_runtimes_do(tmp_path: Path) -> None:
    container = logs(tmp_path)
    line = bytes(range(32, 127)) * 500  # 47500 bytes
    await container.write("stdout", line + b"\nshort\n")
    parts = [entry.split(b" ", 3) for entry in entries(tmp_path)]
    assert [p[2] for p in parts] == [b"P", b"P", b"F", b"F"]
    assert all(len(p[3]) <= MAX_LINE for p in parts)
    assert await read(container) == line + b"\nshort\n"


def stamp(second: int) -> str:
    return format_time(T0 + second * SECOND).decode()


LINES = [b"zero\n", b"one\n", b"two\n", b"three\n", b"four\n"]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Logs(container="app"), b"zero\none\ntwo\nthree\nfour\n"),
        (Logs(container="app", tail_lines=2), b"three\nfour\n"),
        (Logs(container="app", tail_lines=0), b""),
        (Logs(container="app", tail_lines=99), b"zero\none\ntwo\nthree\nfour\n"),
        (Logs(container="app", since_time=stamp(2)), b"two\nthree\nfour\n"),
        (Logs(container="app", since_time="2026-12-07T16:04:07.5+01:00"), b"three\nfour\n"),
        (Logs(container="app", since_time=stamp(60)), b""),
        (Logs(container="app", limit_bytes=7), b"zero\non"),
        (Logs(container="app", limit_bytes=0), b""),
        (
            Logs(container="app", timestamps=True, tail_lines=1),
            f"{stamp(4)} four\n".encode(),
        ),
        (Logs(container="app", tail_lines=3, since_time=stamp(3)), b"three\nfour\n"),
        (Logs(container="app", tail_lines=4, since_time=stamp(0)), b"one\ntwo\nthree\nfour\n"),
        (
            Logs(container="app", timestamps=True, since_time=stamp(3), limit_bytes=40),
            f"{stamp(3)} three\n{stamp(4)} four\n".encode()[:40],
        ),
    ],
    ids=[
        "all",
        "tail",
        "tail-zero",
        "tail-more-than-there-is",
        "since",
        "since-with-offset",
        "since-after-everything",
        "limit-cuts-a-line",
        "limit-zero",
        "timestamps-tail",
        "tail-then-since",
        "since-then-tail",
        "timestamps-since-limit",
    ],
)
async def test_read_options(tmp_path: Path, request_: Logs, expected: bytes) -> None:
    container = logs(tmp_path)
    for i, line in enumerate(LINES):
        await container.write("stderr" if i % 2 else "stdout", line)
    assert await read(container, request_) == expected


async def test_bad_since_time(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        logs(tmp_path).read(Logs(container="app", since_time="yesterday"))


async def test_previous_after_start_run(tmp_path: Path) -> None:
    container = logs(tmp_path)
    with pytest.raises(LookupError) as caught:
        container.read(Logs(container="app", previous=True))
    assert str(caught.value) == 'previous terminated container "app" in pod "default/web" not found'
    await container.start_run()
    await container.write("stdout", b"first run\n")
    await container.end_run()
    await container.start_run()
    await container.write("stdout", b"second run\n")
    assert await read(container) == b"second run\n"
    assert await read(container, Logs(container="app", previous=True)) == b"first run\n"
    previous_follow = Logs(container="app", previous=True, follow=True, tail_lines=1)
    with trio.fail_after(1):
        assert await read(container, previous_follow) == b"first run\n"


async def test_rotation_bounds_disk_use(tmp_path: Path) -> None:
    container = logs(tmp_path, max_bytes=1000)
    for run in range(5):
        await container.start_run()
        for i in range(200):
            await container.write("stdout", f"run {run} line {i}\n".encode())
        await container.end_run()
        assert disk_use(tmp_path) <= 3 * 1000
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["current.log", "current.log.1", "previous.log"]
    text = await read(container)
    assert text.endswith(b"run 4 line 199\n")
    assert text.startswith(b"run 4 line ")  # only this run: .1 and current
    previous = await read(container, Logs(container="app", previous=True))
    assert previous.endswith(b"run 3 line 199\n")


async def follower(
    container: ContainerLogs, request: Logs, send: trio.MemorySendChannel[bytes]
) -> None:
    async with send, aclosing(container.read(request)) as stream:
        async for chunk in stream:
            await send.send(chunk)


async def test_follow_gets_new_lines_at_once_and_ends_with_the_run(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.start_run()
    await container.write("stdout", b"old 1\nold 2\n")
    send, receive = trio.open_memory_channel[bytes](100)
    request = Logs(container="app", follow=True, tail_lines=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower, container, request, send)
        with trio.fail_after(1):
            assert await receive.receive() == b"old 2\n"
        for text in (b"new\n", b"partial", b" end\n"):
            await trio.sleep(0.05)
            await container.write("stderr", text)
            with trio.fail_after(0.1):
                assert await receive.receive() == text.rstrip(b"\n") + (
                    b"\n" if text.endswith(b"\n") else b""
                )
        await container.end_run()
        with trio.fail_after(1):
            assert [chunk async for chunk in receive] == []


async def test_follow_survives_rotations(tmp_path: Path) -> None:
    container = logs(tmp_path, max_bytes=400)
    await container.start_run()
    send, receive = trio.open_memory_channel[bytes](1000)
    expected = b"".join(f"line {i:03d}\n".encode() for i in range(100))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower, container, Logs(container="app", follow=True), send)
        for i in range(100):
            await container.write("stdout", f"line {i:03d}\n".encode())
            if i % 2 == 0:
                await trio.sleep(0.005)
        await container.end_run()
        with trio.fail_after(2):
            got = b"".join([chunk async for chunk in receive])
    assert got == expected


async def test_follow_of_an_ended_run_returns_what_there_is(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.write("stdout", b"done\n")
    await container.end_run()
    with trio.fail_after(1):
        assert await read(container, Logs(container="app", follow=True)) == b"done\n"


async def test_follow_stops_at_the_byte_limit(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.write("stdout", b"12345\n")
    send, receive = trio.open_memory_channel[bytes](100)
    async with trio.open_nursery() as nursery:
        request = Logs(container="app", follow=True, limit_bytes=10)
        nursery.start_soon(follower, container, request, send)
        await trio.sleep(0.05)
        await container.write("stdout", b"67890\nmore\n")
        with trio.fail_after(1):
            assert b"".join([chunk async for chunk in receive]) == b"12345\n6789"


async def test_a_cancelled_follower_goes_quietly(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.write("stdout", b"x\n")
    send, receive = trio.open_memory_channel[bytes](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower, container, Logs(container="app", follow=True), send)
        assert await receive.receive() == b"x\n"
        nursery.cancel_scope.cancel()
    await container.write("stdout", b"after\n")


async def test_chunks_are_whole_entries_of_at_most_64k(tmp_path: Path) -> None:
    container = logs(tmp_path)
    for i in range(3000):
        await container.write("stdout", f"{i:05d} {'x' * 60}\n".encode())
    chunks = []
    async with aclosing(container.read(Logs(container="app"))) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert len(chunks) > 1
    assert all(len(c) <= 64 * 1024 and c.endswith(b"\n") for c in chunks)
    assert b"".join(chunks).count(b"\n") == 3000


def test_parse_time() -> None:
    assert parse_time("2026-12-07T15:04:05.123456789Z") == T0 + 123456789
    assert parse_time("2026-12-07T16:04:05.5+01:00") == T0 + SECOND // 2
    assert format_time(T0 + 7) == b"2026-12-07T15:04:05.000000007Z"


async def test_output_drained_after_end_run_stays_in_that_run(tmp_path: Path) -> None:
    container = logs(tmp_path)
    await container.start_run()
    await container.write("stdout", b"a\n")
    await container.end_run()
    await container.write("stdout", b"late\n")
    assert await read(container) == b"a\nlate\n"
    with pytest.raises(LookupError):
        container.read(Logs(container="app", previous=True))
