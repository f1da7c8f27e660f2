"""The one retry policy: every schedule vk-trio waits by, and the one helper that retries.

**The table.** Every wait before trying again lives below, named after what it paces, with
why those numbers: a ``Backoff`` (``first`` seconds, times ``factor`` per retry, never above
``cap``; ``Backoff.fixed`` for a constant interval) or, for a client call retried in place
(Kubernetes, Vast), a ``RetryPolicy`` (a number of attempts along a ``Backoff``, obeying a
server's short ``Retry-After``). The pod's own backoff is the user's to tune
(``BACKOFF_FIRST``, ``BACKOFF_CAP``); ``pod_backoff`` builds it from the settings, here too.

**The helper.** ``retry_until_done(call, schedule=..., on=...)`` runs ``call`` until it
returns, waiting along the schedule after each failure that belongs to the named error set
``on`` (a ``Retryable``: ``TRANSIENT``, ``VK_FAILURES``, ...). Any other error escalates at
once, a ``PermanentError`` included unless the set names it. A ``TemporaryError`` carrying a
``delay`` (the server's ``Retry-After``, a quota's reset) is never retried sooner than that.
``on_retry`` is awaited before each wait with the error and the wait, to log it with keyword
fields (``log_retry``) or to say it on the pod. Only cancellation stops it otherwise.

Loops that are not "retry one call" keep their own shape but take their waits from the table:
the pod watch and the Service watch (they resume from a resourceVersion and count failures
towards a relist), the EndpointSlice reconciler (it retries the *next* reconcile, which may
differ), the crash loop (``restartPolicy`` with a reset after a long healthy run), the buyer
(its outcomes are not exceptions, and a spend cap waits a sweep), the lost-create lookup
(counts answered lists) and the Lease renewer (a period of its own).

Why not ``stamina`` (installed, and it sleeps with ``trio.sleep``): its retry hooks are global
and synchronous, so a loop cannot await its own report (an Event on the pod naming the wait);
its ``timeout`` (45 s by default) runs on the wall clock, not trio's; and its jitter is
additive, where ours is a fraction. What is left to write is the loop below.

Jitter (a fraction, e.g. 0.2 = ±20 %) spreads callers hit by the same outage, so they do not
all come back in step; it is off by default so that fake-time tests can assert exact times.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from loguru import logger

from vk_trio.errors import PermanentError, TemporaryError, VkError

if TYPE_CHECKING:
    from loguru import Logger

    from vk_trio.config import Settings

__all__ = [
    "AGENT_LINK",
    "ANY_FAILURE",
    "CSR_CREATE",
    "ENDPOINT_WRITE",
    "KUBE_CALL",
    "KUBE_EVENT",
    "LEASE_ENSURE",
    "LOST_CREATE_LOOKUP",
    "LOST_CREATE_LOOKUPS",
    "NAMESPACE_CONFLICT",
    "NAMESPACE_CONFLICTS",
    "NODE_REGISTER",
    "NO_RETRY",
    "POD_WATCH",
    "SERVICE_WATCH",
    "TRANSIENT",
    "UNLESS_PERMANENT",
    "VAST_CALL",
    "VK_FAILURES",
    "Backoff",
    "Delays",
    "OnRetry",
    "RetryPolicy",
    "Retryable",
    "log_retry",
    "pod_backoff",
    "retry_until_done",
    "vast_policy",
]

T = TypeVar("T")


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

    @classmethod
    def fixed(cls, interval: float) -> Backoff:
        """The same wait every time (a poll, or a retry whose cause a human must fix)."""
        return cls(interval, interval, factor=1.0)

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


# -- the table ------------------------------------------------------------------------------
# Client calls, retried in place by the client (``KubeClient.request``, ``VastClient``).

KUBE_CALL = RetryPolicy(attempts=6, backoff=Backoff(0.2, 4.0))
"""One Kubernetes request: five retries spread over ~6 s (0.2 s doubling), shorter than the
10 s lease renew interval, so a flaky apiserver costs one renewal at most."""

KUBE_EVENT = RetryPolicy(attempts=3, backoff=Backoff(0.5, 2.0, factor=4.0))
"""Posting an Event: two retries (0.5 s, 2 s), few and short, because whoever emits is
waiting on us."""

VAST_CALL = RetryPolicy(attempts=5, backoff=Backoff(1.0, 30.0, jitter=0.2))
"""One Vast call: Vast's own CLI starts at 0.15 s, but its rate-limit thresholds are 1-4.5 s;
jittered, because every pod of a node is hit by the same outage."""

NO_RETRY = RetryPolicy(attempts=1)
"""One attempt, for callers that own their schedule (the Lease, the watch, a start-up check)."""

# Loops that retry on their own.

POD_WATCH = Backoff(0.5, 30.0)
"""Re-watching pods after the n-th failure in a row: reflector-style exponential backoff,
capped so a node recovers within half a minute of the apiserver."""

SERVICE_WATCH = Backoff(1.0, 60.0)
"""Relisting Services after a failure: 1 s doubling to a minute (Services only feed the
EndpointSlices, which keep their last state meanwhile)."""

ENDPOINT_WRITE = Backoff(1.0, 60.0)
"""Reconciling EndpointSlices again after a failed write: 1 s doubling to a minute."""

LEASE_ENSURE = Backoff(0.2, 7.0)
"""The kubelet's retry schedule for a failed lease renewal: 200 ms doubling, capped at 7 s,
so that the node never misses its 40 s lease."""

NODE_REGISTER = Backoff.fixed(5.0)
"""Registering the Node until the API server accepts it: the probes stay unready meanwhile,
and the API server is usually just starting, so a short fixed interval."""

LOST_CREATE_LOOKUP = Backoff.fixed(3.0)
LOST_CREATE_LOOKUPS = 4
"""A create whose answer was lost is looked up ``LOST_CREATE_LOOKUPS`` times, this far apart
(and, while listing fails, until a list answers), because a just-created instance may take a
moment to show in the list."""

AGENT_LINK = Backoff(0.5, 10.0)
"""Between attempts to reach a pod's agent: it starts within seconds of its instance running
(download, checksum, start), so the first attempts are close together, and every wait is
time the pod's process is not started (the agent bench measured 12 s of its 16 s median in
this wait with 1 s doubling to 30 s); a refused connection costs next to nothing."""

CSR_CREATE = Backoff.fixed(60.0)
"""Asking again after a serving-certificate CSR could not be created (API errors, not
refusals): the node serves a self-signed certificate meanwhile, so there is no hurry."""

NAMESPACE_CONFLICT = Backoff(0.02, 1.0, jitter=0.5)
NAMESPACE_CONFLICTS = 10
"""A namespace budget write refused with 409 (another node or pod wrote first) is re-read
and tried again up to ``NAMESPACE_CONFLICTS`` times, this far apart: short and jittered,
because the writers are other nodes deciding at the same moment."""


def pod_backoff(settings: Settings) -> Backoff:
    """A pod's retries (no offers, a crash loop, a failed destroy): ``BACKOFF_FIRST``
    doubling to ``BACKOFF_CAP``, as the user set them."""
    return Backoff(settings.backoff_first, settings.backoff_cap)


def vast_policy(settings: Settings) -> RetryPolicy:
    """``VAST_CALL`` with the user's ``VAST_ATTEMPTS``."""
    return replace(VAST_CALL, attempts=settings.vast_attempts)


# -- the helper ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Retryable:
    """A named set of errors a loop retries: instances of ``on`` that are not ``never``."""

    on: tuple[type[Exception], ...]
    never: tuple[type[Exception], ...] = ()

    def __contains__(self, error: object) -> bool:
        return isinstance(error, self.on) and not isinstance(error, self.never)


TRANSIENT = Retryable((TemporaryError,))
"""What may clear by itself (5xx, 429, timeouts, a failed sweep); a permanent error escalates."""

VK_FAILURES = Retryable((VkError,))
"""Every error vk-trio raises on purpose, permanent ones included: for work that must be done
whatever it takes (destroying what a pod rented; a later try may meet a fixed key)."""

UNLESS_PERMANENT = Retryable((Exception,), never=(PermanentError,))
"""Anything but a refusal an operator must fix (RBAC, credentials), which escalates to say so."""

ANY_FAILURE = Retryable((Exception,))
"""Anything at all, bugs included: only where giving up would leave a paid instance or take
the node down (a pod's supervisor, its teardown)."""

OnRetry = Callable[[Exception, float], Awaitable[None]]
"""Awaited with the error and the seconds about to be waited, before each wait."""


async def retry_until_done(
    call: Callable[[], Awaitable[T]],
    *,
    schedule: Backoff,
    on: Retryable,
    on_retry: OnRetry | None = None,
) -> T:
    """Await ``call()`` until it returns, and return its result.

    After a failure in ``on``, waits the schedule's next step (a fresh ``schedule.delays()``
    per call of this function) or, when the error is a ``TemporaryError`` with a ``delay``
    longer than that step, the ``delay``: never sooner than the server asked, never sooner
    than our own schedule. ``on_retry`` is awaited first. Any error outside ``on`` escalates
    at once; cancellation ends it (during the call or the wait).
    """
    delays = schedule.delays()
    while True:
        try:
            return await call()
        except Exception as error:
            if error not in on:
                raise
            wait = delays.next()
            asked = error.delay if isinstance(error, TemporaryError) else None
            if asked is not None:
                wait = max(wait, asked)
            if on_retry is not None:
                await on_retry(error, wait)
            await trio.sleep(wait)


def log_retry(message: str, *, log: Logger = logger, **fields: Any) -> OnRetry:
    """An ``on_retry`` that logs a warning: ``message`` as it is, then ``error``,
    ``retry_in`` and ``fields`` as keyword fields (the JSON log stays flat)."""

    async def logged(error: Exception, wait: float) -> None:
        # depth 2: the record names the caller of retry_until_done, not this module
        log.opt(depth=2).warning(message, error=str(error), retry_in=round(wait, 2), **fields)

    return logged
