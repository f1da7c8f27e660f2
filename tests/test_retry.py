"""The one retry helper, on trio's autojump clock: exact virtual times, no real waiting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.retry import (
    ANY_FAILURE,
    TRANSIENT,
    UNLESS_PERMANENT,
    VK_FAILURES,
    Backoff,
    Retryable,
    log_retry,
    pod_backoff,
    retry_until_done,
)


class Flaky:
    """Raises the given errors one per call, then returns "done"; records when it was called."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(trio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def slow(delay: float | None) -> TemporaryError:
    error = TemporaryError("throttled")
    error.delay = delay
    return error


async def test_waits_follow_the_backoff_then_the_result_is_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = Flaky(*(TemporaryError(f"down {n}") for n in range(5)))
    start = trio.current_time()
    result = await retry_until_done(call, schedule=Backoff(1.0, 5.0), on=TRANSIENT)
    assert result == "done"
    # waits 1, 2, 4, 5 (capped), 5
    assert [t - start for t in call.calls] == [0.0, 1.0, 3.0, 7.0, 12.0, 17.0]


async def test_fixed_schedule_waits_the_same_every_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = Flaky(TemporaryError("a"), TemporaryError("b"), TemporaryError("c"))
    start = trio.current_time()
    await retry_until_done(call, schedule=Backoff.fixed(3.0), on=TRANSIENT)
    assert [t - start for t in call.calls] == [0.0, 3.0, 6.0, 9.0]


async def test_a_longer_delay_carried_by_the_error_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the server asks for 10 s, then 0.5 s (shorter than the schedule's 2 s: the schedule wins)
    call = Flaky(slow(10.0), slow(0.5), slow(None))
    start = trio.current_time()
    await retry_until_done(call, schedule=Backoff(1.0, 60.0), on=TRANSIENT)
    assert [t - start for t in call.calls] == [0.0, 10.0, 12.0, 16.0]


async def test_on_retry_sees_each_error_and_the_wait_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, float, float]] = []

    async def record(error: Exception, wait: float) -> None:
        seen.append((str(error), wait, trio.current_time()))

    start = trio.current_time()
    await retry_until_done(
        Flaky(TemporaryError("one"), slow(7.0)),
        schedule=Backoff(2.0, 60.0),
        on=TRANSIENT,
        on_retry=record,
    )
    assert [(e, w, t - start) for e, w, t in seen] == [("one", 2.0, 0.0), ("throttled", 7.0, 2.0)]


async def test_a_permanent_error_escalates_at_once(autojump_clock: trio.testing.MockClock) -> None:
    call = Flaky(TemporaryError("blip"), PermanentError("bad key"))
    start = trio.current_time()
    with pytest.raises(PermanentError, match="bad key"):
        await retry_until_done(call, schedule=Backoff(1.0, 60.0), on=UNLESS_PERMANENT)
    assert [t - start for t in call.calls] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("retryable", "error", "retried"),
    [
        (TRANSIENT, TemporaryError("x"), True),
        (TRANSIENT, PermanentError("x"), False),
        (TRANSIENT, RuntimeError("bug"), False),
        (UNLESS_PERMANENT, RuntimeError("x"), True),
        (UNLESS_PERMANENT, PermanentError("x"), False),
        (VK_FAILURES, PermanentError("x"), True),
        (VK_FAILURES, RuntimeError("bug"), False),
        (ANY_FAILURE, RuntimeError("bug"), True),
        (Retryable((LookupError,), never=(KeyError,)), KeyError("k"), False),
        (Retryable((LookupError,), never=(KeyError,)), IndexError("i"), True),
    ],
)
def test_named_sets_say_what_is_retried(
    retryable: Retryable, error: Exception, retried: bool
) -> None:
    assert (error in retryable) is retried


async def test_an_error_outside_the_set_escalates_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await retry_until_done(call, schedule=Backoff(1.0, 60.0), on=TRANSIENT)
    assert len(call.calls) == 1


async def test_cancellation_stops_it_during_a_wait(autojump_clock: trio.testing.MockClock) -> None:
    call = Flaky(*(TemporaryError("down") for _ in range(100)))
    start = trio.current_time()
    with trio.move_on_after(10.0) as scope:
        await retry_until_done(call, schedule=Backoff(1.0, 60.0), on=TRANSIENT)
    assert scope.cancelled_caught
    assert trio.current_time() - start == 10.0
    assert [t - start for t in call.calls] == [0.0, 1.0, 3.0, 7.0]  # no call after the cancel


async def test_each_call_starts_the_schedule_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = Backoff(1.0, 60.0)
    for _ in range(2):
        call = Flaky(TemporaryError("a"), TemporaryError("b"))
        start = trio.current_time()
        await retry_until_done(call, schedule=schedule, on=TRANSIENT)
        assert [t - start for t in call.calls] == [0.0, 1.0, 3.0]


def test_the_pod_backoff_is_the_users() -> None:
    from vk_trio.config import load

    settings = load(None, {"VAST_API_KEY": "k", "BACKOFF_FIRST": "2", "BACKOFF_CAP": "9"})
    backoff = pod_backoff(settings)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 9.0]


async def test_log_retry_names_the_caller_and_keeps_the_fields_flat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from loguru import logger

    records: list[dict[str, object]] = []
    sink = logger.add(lambda m: records.append(dict(m.record)), level="WARNING")
    try:
        await retry_until_done(
            Flaky(TemporaryError("down")),
            schedule=Backoff(1.5, 60.0),
            on=TRANSIENT,
            on_retry=log_retry("thing failed; retrying", thing="x"),
        )
    finally:
        logger.remove(sink)
    [record] = records
    assert record["message"] == "thing failed; retrying"
    assert record["extra"] == {"error": "down", "retry_in": 1.5, "thing": "x"}
    assert record["name"] == __name__
