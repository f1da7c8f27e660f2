"""Client-side spacing of Vast API calls, so a thousand pods cannot stampede the API.

Vast enforces a minimum interval between calls per endpoint and per identity (API key), and
answers 429 to anything faster (``vast-api.md`` §7). Backing off after a 429 works, but every
429 is a wasted round trip and, for a create, a delayed pod. So the process keeps one
:class:`Pacer` (the app creates it and hands it to its one ``VastClient``) and every request
waits for its endpoint's next free slot first.

Callers of one endpoint queue first-come first-served: each endpoint is a "lane" holding a
``trio.Lock`` (which wakes waiters in FIFO order) and the loop time of its next free slot. The
lock is held while sleeping, so the queue order is the order of the calls. A caller cancelled
while queued gives up its place without using a slot.

Intervals are per endpoint *template* (every ``GET /instances/{id}/`` shares one lane), in
seconds of ``trio.current_time()``; one Pacer belongs to one Trio run.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import trio
from trio.lowlevel import RunVar

__all__ = ["DEFAULT_INTERVALS", "DEFAULT_SCALE", "Pacer", "shared_pacer"]

DEFAULT_INTERVALS: Mapping[str, float] = {
    "create": 4.5,  # PUT /api/v0/asks/{id}/
    "show": 2.0,  # GET /api/v0/instances/{id}/
    "modify": 1.0,  # PUT /api/v0/instances/{id}/ (label, start, stop)
    "destroy": 3.0,  # DELETE /api/v0/instances/{id}/
    "list": 1.0,  # GET /api/v1/instances/ (each page)
    "search": 2.0,  # POST /api/v0/bundles/ (profile low_volume_burst, threshold 2)
    "request_logs": 1.0,  # PUT /api/v0/instances/request_logs/{id}/ (undocumented; be polite)
    "change_bid": 1.0,  # PUT /api/v0/instances/bid_price/{id}/ (unpublished; as "modify")
    "user": 1.0,  # GET /api/v0/users/current/ (the credit; undocumented limit, be polite)
    "charges": 1.0,  # GET /api/v0/charges/ (each page; undocumented limit, be polite)
}
"""Seconds between two calls of each endpoint: the thresholds Vast publishes (§7)."""

WAITS_KEPT = 10_000
"""Waits remembered per endpoint for ``Pacer.stats`` percentiles (80 KB each at most)."""

DEFAULT_SCALE = 1.1
"""Stay 10 % above the published thresholds: calls spaced exactly at the threshold reach Vast
with network jitter, and about half of them would land a little early and get a 429."""


class _Lane:
    """One endpoint's queue: who goes next (the lock) and when they may go (``next_at``)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = trio.Lock()
        self.next_at = -math.inf
        self.calls = 0
        self.waited = 0.0
        self.recent: deque[float] = deque(maxlen=WAITS_KEPT)
        """The last waits in seconds, for percentiles (``Pacer.stats``)."""


class Pacer:
    """Minimum spacing between calls, per endpoint, shared by every caller of one client.

    ``intervals`` overrides entries of :data:`DEFAULT_INTERVALS`; ``scale`` multiplies all of
    them (``scale=0`` turns pacing off, e.g. for tests against a simulator without limits).
    """

    def __init__(
        self, intervals: Mapping[str, float] | None = None, *, scale: float = DEFAULT_SCALE
    ) -> None:
        if scale < 0 or math.isnan(scale):
            raise ValueError(f"scale must be >= 0, got {scale!r}")
        merged = {**DEFAULT_INTERVALS, **(intervals or {})}
        if unknown := merged.keys() - DEFAULT_INTERVALS.keys():
            raise ValueError(f"unknown endpoints: {sorted(unknown)}")
        self._lanes = {name: _Lane(seconds * scale) for name, seconds in merged.items()}

    def interval(self, endpoint: str) -> float:
        """The effective spacing of ``endpoint`` in seconds."""
        return self._lanes[endpoint].interval

    async def wait(self, endpoint: str) -> None:
        """Return when the caller may send its ``endpoint`` request (always a checkpoint).

        The slot is taken on return, so call this immediately before sending.
        """
        lane = self._lanes[endpoint]
        lane.calls += 1
        if lane.interval <= 0:
            await trio.lowlevel.checkpoint()
            return
        asked = trio.current_time()
        async with lane.lock:
            await trio.sleep_until(lane.next_at)
            now = trio.current_time()
            lane.next_at = now + lane.interval
        lane.waited += now - asked
        lane.recent.append(now - asked)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per endpoint used so far: calls, seconds waited in total, and the p50/p99/max wait
        of the last ``WAITS_KEPT`` calls (what ``vk-trio bench`` reports as pacer wait)."""
        out: dict[str, dict[str, float]] = {}
        for name, lane in self._lanes.items():
            if not lane.calls:
                continue
            waits = sorted(lane.recent) or [0.0]
            out[name] = {
                "calls": lane.calls,
                "waited_s": round(lane.waited, 3),
                "p50_s": round(waits[len(waits) // 2], 3),
                "p99_s": round(waits[min(len(waits) - 1, len(waits) * 99 // 100)], 3),
                "max_s": round(waits[-1], 3),
            }
        return out


_SHARED: RunVar[dict[tuple[str, float], Pacer]] = RunVar("vk_trio_pacers")


def shared_pacer(api_key: str | None, scale: float | None = None) -> Pacer:
    """The one pacer of every client of ``api_key`` in this Trio run.

    Vast counts calls per endpoint *per API key*, so two virtual nodes of one process on one
    account must queue in the same lanes, or together they would call twice as fast as
    allowed. (Processes cannot share a pacer: give each ``--pacing N`` when N share a key.)
    """
    scale = DEFAULT_SCALE if scale is None else scale
    try:
        pacers = _SHARED.get()
    except LookupError:
        pacers = {}
        _SHARED.set(pacers)
    key = (api_key or "", scale)
    if key not in pacers:
        pacers[key] = Pacer(scale=scale)
    return pacers[key]
