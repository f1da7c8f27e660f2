"""``/healthz`` and ``/readyz``, served from the node's own Trio loop (port 10255).

Liveness: a watchdog task wakes every second and records the longest stall since it last
woke: the longest turn of the event loop (from leaving its I/O wait to entering the next:
task steps and the garbage collections they trigger, while no socket or timer is served),
or its own lateness if that was longer. If something blocked the loop (a blocking call, a
CPU-bound bug), the stall shows, and ``/healthz`` answers 503 for a while afterwards; if the
loop is wedged for good, nothing answers at all and the probe times out. Either way the
kubelet restarts us.

Readiness: the node is registered, the pod watch has listed every pod once, and the Vast API
answers: a refusal (a revoked key) shows at once, since retrying will not fix it; errors and
timeouts show once several sweeps in a row failed. Readiness never gates the node's Lease: a
Vast outage degrades the probe, not the node, so no pod is evicted for it.
Each failing check is one line of the 503 body, so ``curl .../readyz`` says what is wrong.

``/metrics`` (Prometheus text, ``vk_trio.metrics``) is served here too, unauthenticated like
the probes: it holds counts and dollars, no secrets, and a scraper inside the cluster needs
no token. The kubelet port serves the same behind its authentication.

``/debug/vars`` answers JSON for ``vk-trio bench`` and curious operators: the watchdog's recent
stalls (p50/p99/max of each second's longest, over the last hour or the last
``?stall_seconds=N``); the same of each second's most CPU-heavy turn in the node's own thread
time (``loop_turn_cpu``: on a busy machine a turn's wall time also counts the while the OS
ran other processes, which this does not); the cyclic garbage collector's pauses (the usual
cause of a stall in a busy node) and whatever the app adds (pacer waits, sweeps).

A standby replica (``--leader-elect``) answers ``/readyz`` 200 with ``standby: leader is X``:
it is ready for its job, which is to take over. Were it unready, a PodDisruptionBudget of
``minAvailable: 1`` would count one healthy pod of two and refuse every eviction, so a node
drain could never move the leader. It answers 503 when it could not take over (the API
server has not answered its election for a lease duration) or its loop stalls.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from vk_trio.http_server import Request, Response
from vk_trio.metrics import render

WATCHDOG_INTERVAL = 1.0
STALL_LIMIT = 10.0
"""A loop that woke this many seconds late (within ``STALL_MEMORY``) is reported unhealthy."""
STALL_MEMORY = 60.0
LATENESS_KEPT = 3600
"""Watchdog wake-ups remembered for ``/debug/vars`` (an hour at one a second)."""


class Health:
    """Probe state; the app flips the flags, the probes read them."""

    def __init__(
        self,
        *,
        vast_last_success: Callable[[], float | None],
        vast_problem: Callable[[], str | None],
        vast_stale: float,
    ) -> None:
        self.node_registered = False
        self.watch_synced: Callable[[], bool] = lambda: False
        self.standby: Callable[[], str | None] = lambda: None
        """``standby: leader is X`` while another replica drives the node; None otherwise."""
        self.standby_problem: Callable[[], str | None] = lambda: None
        self._vast_last_success = vast_last_success
        self._vast_problem = vast_problem
        self._vast_stale = vast_stale
        self._stalled_at = -float("inf")
        self._worst_stall = 0.0
        self._lateness: deque[float] = deque(maxlen=LATENESS_KEPT)
        self._turn_cpu: deque[float] = deque(maxlen=LATENESS_KEPT)
        self._collections = _Collections()
        self.debug_vars: Callable[[], dict[str, Any]] = dict
        """More ``/debug/vars`` entries, set by the app."""

    async def watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Measure event-loop stalls forever."""
        turns = _LoopTurns()
        trio.lowlevel.add_instrument(turns)
        gc.callbacks.append(self._collections)
        try:
            task_status.started()
            while True:
                expected = trio.current_time() + WATCHDOG_INTERVAL
                await trio.sleep(WATCHDOG_INTERVAL)
                longest, cpu = turns.take()
                late = max(trio.current_time() - expected, longest)
                self._lateness.append(late)
                self._turn_cpu.append(cpu)
                if late > STALL_LIMIT:
                    self._stalled_at = trio.current_time()
                    self._worst_stall = late
        finally:
            gc.callbacks.remove(self._collections)
            trio.lowlevel.remove_instrument(turns)

    def stall_stats(self, last: int = LATENESS_KEPT) -> dict[str, float]:
        """Each watchdog second's longest stall, over the ``last`` seconds (at most
        ``LATENESS_KEPT``)."""
        return _percentiles(list(self._lateness)[-max(last, 1) :])

    def turn_cpu_stats(self, last: int = LATENESS_KEPT) -> dict[str, float]:
        """Each watchdog second's most CPU-heavy loop turn (the node's thread time), over
        the ``last`` seconds: what the node's own work costs a turn, preemption aside."""
        return _percentiles(list(self._turn_cpu)[-max(last, 1) :])

    def liveness_problems(self) -> list[str]:
        if trio.current_time() - self._stalled_at < STALL_MEMORY:
            return [f"event loop stalled for {self._worst_stall:.1f}s recently"]
        return []

    def node_ready(self) -> tuple[bool, str]:
        """The Node's Ready condition: (ready, message), from liveness alone (a Vast outage
        must not make the node NotReady, or every pod would be evicted)."""
        problems = self.liveness_problems()
        if problems:
            return False, "; ".join(problems)
        return True, "kubelet is posting ready status"

    def readiness_problems(self) -> list[str]:
        problems = self.liveness_problems()
        if not self.node_registered:
            problems.append("node not registered with the API server yet")
        if not self.watch_synced():
            problems.append("pod watch has not synced yet")
        last = self._vast_last_success()
        vast_problem = self._vast_problem()
        if vast_problem is not None:
            problems.append(vast_problem)
        elif last is None:
            problems.append("Vast API has not answered yet")
        elif trio.current_time() - last > self._vast_stale:
            problems.append(f"Vast API has not answered for {trio.current_time() - last:.0f}s")
        return problems

    async def handle(self, request: Request) -> Response:
        if request.path == "/healthz":
            return _answer(self.liveness_problems())
        if request.path == "/readyz":
            standby = self.standby()
            if standby is not None:
                problem = self.standby_problem()
                return _answer(self.liveness_problems() + ([problem] if problem else []), standby)
            return _answer(self.readiness_problems())
        if request.path == "/metrics":
            body, content_type = render()
            return Response(body=body, headers=[("Content-Type", content_type)])
        if request.path == "/debug/vars":
            window = request.param("stall_seconds", "")
            last = int(window) if window and window.isdigit() else LATENESS_KEPT
            stalls = {
                "loop_stall": self.stall_stats(last),
                "loop_turn_cpu": self.turn_cpu_stats(last),
                "gc": self._collections.stats(),
            }
            return Response.json({**stalls, **self.debug_vars()})
        return Response.text("not found\n", 404)


def _percentiles(recent: list[float]) -> dict[str, float]:
    """Samples (seconds) as their count, p50, p99 and max."""
    late = sorted(recent) or [0.0]
    return {
        "samples": len(recent),
        "p50_s": round(late[len(late) // 2], 4),
        "p99_s": round(late[min(len(late) - 1, len(late) * 99 // 100)], 4),
        "max_s": round(late[-1], 4),
    }


def _answer(problems: list[str], ok: str = "ok") -> Response:
    if problems:
        return Response.text("".join(f"{p}\n" for p in problems), 503)
    return Response.text(f"{ok}\n")


class _LoopTurns(trio.abc.Instrument):
    """The longest turn of the event loop since ``take``: from waking from its I/O wait to
    waiting again, the loop runs every ready task step and serves nothing else. Two hooks per
    turn, none per task step. Also the turn that used the most of this thread's CPU: on a
    machine with more runnable processes than cores, a turn's wall time includes the OS
    running others, and only its CPU time says how much of a stall is the node's own work."""

    def __init__(self) -> None:
        self._woke: float | None = None
        self._woke_cpu = 0.0
        self._longest = 0.0
        self._most_cpu = 0.0

    def after_io_wait(self, timeout: float) -> None:
        self._woke = time.perf_counter()
        self._woke_cpu = time.thread_time()

    def before_io_wait(self, timeout: float) -> None:
        if self._woke is not None:
            self._longest = max(self._longest, time.perf_counter() - self._woke)
            self._most_cpu = max(self._most_cpu, time.thread_time() - self._woke_cpu)

    def take(self) -> tuple[float, float]:
        """The longest turn (wall seconds) and the most CPU-heavy one (thread seconds)
        since the last ``take``."""
        longest, self._longest = self._longest, 0.0
        most_cpu, self._most_cpu = self._most_cpu, 0.0
        return longest, most_cpu


class _Collections:
    """Pauses of the cyclic garbage collector by generation (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._count = [0, 0, 0]
        self._worst = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self._count[generation] += 1
        took = time.perf_counter() - self._started
        self._worst[generation] = max(self._worst[generation], took)

    def stats(self) -> dict[str, dict[str, float]]:
        """Collections and the longest pause (seconds) of each generation, since start."""
        return {
            f"gen{g}": {"count": self._count[g], "max_s": round(self._worst[g], 4)}
            for g in range(3)
        }
