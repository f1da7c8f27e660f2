"""The kubelet's crash back-off, so that a crashing process restarts on the kubelet's clock.

The kubelet restarts a container that exited at once the first time, then waits 10 s, 20 s,
40 s... up to 5 minutes before each next start, and forgets the back-off once a run lasted
longer than twice the cap (10 minutes). Its waiting message names the delay as Go prints a
``time.Duration`` (``back-off 20s``, ``back-off 2m40s``), which users paste into searches, so
:func:`go_duration` prints it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CrashBackoff", "go_duration"]


@dataclass
class CrashBackoff:
    """One container's back-off; ``base``/``cap`` are injectable so tests need not wait 10 s."""

    base: float = 10.0
    cap: float = 300.0
    reset_after: float = 600.0
    _next: float | None = field(default=None, init=False)

    def delay(self, ran_for: float) -> float:
        """How long to wait before the next start, after a run of ``ran_for`` seconds."""
        if ran_for >= self.reset_after:
            self._next = None
        if self._next is None:
            self._next = self.base
            return 0.0
        current = self._next
        self._next = min(current * 2, self.cap)
        return current


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` shows it (whole milliseconds)."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:g}"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
