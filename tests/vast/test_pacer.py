"""Pacer: per-endpoint minimum spacing, FIFO order among waiters, independence of endpoints,
cancellation, and configuration. All timing is exact, on ``autojump_clock``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from vk_trio.vast import DEFAULT_INTERVALS, Pacer
from vk_trio.vast.pacer import shared_pacer


async def test_calls_of_one_endpoint_are_spaced_by_its_interval(autojump_clock: Any) -> None:
    pacer = Pacer(scale=1.0)
    started = trio.current_time()
    times = []
    for _ in range(4):
        await pacer.wait("create")
        times.append(trio.current_time() - started)
    assert times == [0.0, 4.5, 9.0, 13.5]


async def test_a_quiet_endpoint_does_not_wait(autojump_clock: Any) -> None:
    pacer = Pacer(scale=1.0)
    await pacer.wait("destroy")
    await trio.sleep(10)
    started = trio.current_time()
    await pacer.wait("destroy")
    assert trio.current_time() == started


async def test_waiters_are_served_first_come_first_served(autojump_clock: Any) -> None:
    pacer = Pacer(scale=1.0)
    served: list[tuple[int, float]] = []
    started = trio.current_time()

    async def caller(n: int) -> None:
        await pacer.wait("show")
        served.append((n, trio.current_time() - started))

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(caller, n)
            await trio.testing.wait_all_tasks_blocked()  # queue them in a known order
    assert served == [(n, 2.0 * n) for n in range(6)]


async def test_endpoints_do_not_wait_for_each_other(autojump_clock: Any) -> None:
    pacer = Pacer(scale=1.0)
    started = trio.current_time()
    await pacer.wait("create")
    await pacer.wait("list")
    await pacer.wait("search")
    assert trio.current_time() == started
    await pacer.wait("list")
    assert trio.current_time() - started == 1.0


async def test_a_cancelled_waiter_gives_its_slot_back(autojump_clock: Any) -> None:
    pacer = Pacer(scale=1.0)
    started = trio.current_time()
    await pacer.wait("destroy")
    with trio.move_on_after(1.0):
        await pacer.wait("destroy")  # would get the slot at 3.0; gives up at 1.0
    await pacer.wait("destroy")
    assert trio.current_time() - started == 3.0
    await pacer.wait("destroy")
    assert trio.current_time() - started == 6.0


async def test_scale_zero_turns_pacing_off(autojump_clock: Any) -> None:
    pacer = Pacer(scale=0)
    started = trio.current_time()
    for _ in range(100):
        await pacer.wait("create")
    assert trio.current_time() == started


def test_defaults_stay_above_the_published_thresholds() -> None:
    pacer = Pacer()
    assert DEFAULT_INTERVALS["create"] == 4.5
    for endpoint, threshold in DEFAULT_INTERVALS.items():
        assert pacer.interval(endpoint) == pytest.approx(threshold * 1.1)


def test_intervals_can_be_overridden_and_scaled() -> None:
    pacer = Pacer({"create": 10.0}, scale=0.5)
    assert (pacer.interval("create"), pacer.interval("list")) == (5.0, 0.5)


@pytest.mark.parametrize(
    ("intervals", "scale"), [({"creat": 1.0}, 1.0), (None, -1.0), (None, float("nan"))]
)
def test_bad_configuration_is_rejected(intervals: dict[str, float] | None, scale: float) -> None:
    with pytest.raises(ValueError):
        Pacer(intervals, scale=scale)


async def test_one_pacer_per_api_key_in_a_process() -> None:
    """Vast limits per key: two nodes of one process on one key queue in the same lanes."""
    first = shared_pacer("key-a", None)
    assert shared_pacer("key-a", None) is first
    assert shared_pacer("key-b", None) is not first
    assert shared_pacer("key-a", 2.0) is not first  # another multiplier, another budget
    assert first.interval("create") == pytest.approx(4.5 * 1.1)
