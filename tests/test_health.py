"""The loop watchdog behind ``/healthz`` and ``/debug/vars``, on the real clock: a stall is
measured even when it falls between two of the watchdog's wake-ups (a once-a-second sleep
that merely checks how late it woke would miss it), and collector pauses are counted."""

from __future__ import annotations

import gc
import time
from typing import Any

import msgspec
import trio

from vk_trio.health import WATCHDOG_INTERVAL, Health
from vk_trio.http_server import Request


async def debug_vars(health: Health) -> dict[str, Any]:
    response = await health.handle(Request("GET", "/debug/vars", {}, {}))
    assert response.status == 200
    answer: dict[str, Any] = msgspec.json.decode(response.body)
    return answer


async def test_a_stall_between_two_wakeups_is_measured(nursery: trio.Nursery) -> None:
    health = Health(vast_last_success=lambda: None, vast_problem=lambda: None, vast_stale=1.0)
    await nursery.start(health.watchdog)
    await trio.sleep(0.3)  # the watchdog sleeps until 1.0: it will not wake late
    busy_until = time.perf_counter() + 0.15
    while time.perf_counter() < busy_until:  # a CPU-bound step: the stall under test
        pass
    gc.collect()
    # The watchdog's next wake-up is due at WATCHDOG_INTERVAL after it started, which is
    # before this sleep ends: trio runs the earlier deadline first, however slow the machine.
    await trio.sleep(WATCHDOG_INTERVAL)
    found = await debug_vars(health)
    assert found["loop_stall"]["samples"] >= 1
    assert 0.15 <= found["loop_stall"]["max_s"] < 1.0
    assert found["gc"]["gen2"]["count"] >= 1 and found["gc"]["gen2"]["max_s"] > 0
