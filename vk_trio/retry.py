"""The one retry policy: capped exponential backoff, optionally jittered.

Every loop in vk-trio that waits before trying again (a Vast call, a Kubernetes call, the pod
watch, the Lease, a pod's buy, crash loop or destroy) takes its waits from a ``Backoff``:
``first`` seconds, multiplied by ``factor`` each time, never above ``cap``. What differs
between them is only the numbers, so the numbers live with each caller and the arithmetic here.
A client call retried in place (Vast, Kubernetes) is bounded by a ``RetryPolicy``: a number
of attempts along a ``Backoff``, obeying a server's short ``Retry-After``.

Jitter (a fraction, e.g. 0.2 = ±20 %) spreads callers hit by the same outage, so they do not
all come back in step; it is off by default so that fake-time tests can assert exact times.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "Delays", "RetryPolicy"]


class Backoff:
    """A schedule of waits: ``first * factor**(n-1)`` before retry ``n``, at most ``cap``."""

    __slots__ = ("cap", "factor", "first", "jitter")

    def __init__(
        self, first: float, cap: float, *, factor: float = 2.0, jitter: float = 0.0
    ) -> None:
        if not (0 <= first <= cap and factor >= 1 and 0 <= jitter <= 1) or math.isinf(cap):
            raise ValueError(
                f"invalid backoff: first={first} cap={cap} factor={factor} jitter={jitter}"
            )
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter

    def __repr__(self) -> str:
        return f"Backoff(first={self.first}, cap={self.cap}, factor={self.factor})"

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        exponent = min(max(retry, 1) - 1, 64)  # beyond 2**64 every schedule is at its cap
        wait = min(self.cap, self.first * self.factor**exponent)
        if self.jitter:
            wait *= 1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0)
        return min(self.cap, wait)

    def delays(self) -> Delays:
        """A fresh sequence of waits following this schedule (one per retrying loop)."""
        return Delays(self)


class Delays:
    """One loop's position in a ``Backoff``: ``next()`` the wait, ``reset()`` after a success."""

    __slots__ = ("_backoff", "_retry")

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._retry = 0

    @property
    def retries(self) -> int:
        """How many waits were handed out since the last reset."""
        return self._retry

    def next(self) -> float:
        self._retry += 1
        return self._backoff.delay(self._retry)

    def reset(self) -> None:
        self._retry = 0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one client call is retried on a transient failure."""

    attempts: int = 5
    """Tries in total, the first included; then the typed error is raised."""
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0, jitter=0.2))
    max_retry_after: float = 60.0
    """A ``Retry-After`` up to this many seconds is obeyed exactly; a longer one (or none)
    falls back to the backoff."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"invalid retry policy: {self!r}")

    def wait(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds before retry ``retry`` (1-based), given the server's ``Retry-After``."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        return self.backoff.delay(retry, rng)
