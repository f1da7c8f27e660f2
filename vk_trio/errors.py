"""The error kinds the rest of vk-trio acts on.

::

    VkError                      every error vk-trio raises on purpose
    ├── TemporaryError           try again later; the pod stays Pending (Vast 5xx/429, timeouts)
    │   ├── Fenced               not sent: this replica lost the leader election
    │   └── LeadershipLost       this replica stopped leading: it stands by and may lead again
    └── PermanentError           retrying the same thing cannot help (bad annotation, bad API key)

Clients (``vk_trio.vast``, ``vk_trio.kube``) subclass these, so the pod supervisor decides
"retry or report" from the type alone and never from a message string. How long to wait is
the retrier's business (``vk_trio.retry``); a client that honours a server's ``Retry-After``
does so inside its own retries, and a temporary error it then raises carries the wait it was
told (``delay``), which ``vk_trio.retry.retry_until_done`` never undercuts.
"""

from __future__ import annotations


class VkError(Exception):
    """Base of every error vk-trio raises on purpose."""


class TemporaryError(VkError):
    """A condition that may clear by itself; retrying later may succeed."""

    delay: float | None = None
    """Seconds not to retry before, when the failing side said so (a ``Retry-After``, a
    quota's reset, the client's own last backoff step); ``None``: the retrier's schedule
    alone decides."""


class PermanentError(VkError):
    """Retrying the same request cannot succeed; the cause must be reported and fixed."""


class Fenced(TemporaryError):
    """Refused before it was sent: this replica no longer leads (``vk_trio.kube.leader``).

    Raised by the fence a client checks right before a call that spends or frees money; the
    caller's scope is being cancelled anyway, so nothing retries it.
    """


class LeadershipLost(TemporaryError):
    """This replica stopped leading; the message says why. Its driving scope was cancelled.

    Raised by ``serve_node`` once every task it drove has ended (``vk_trio.kube.leader``
    re-exports it); the process stands by and, elected again, starts afresh, so it is
    temporary: nothing between ``serve_node`` and its caller catches it as such.
    """


def describe_error(exc: BaseException) -> str:
    """``Type: message``, never empty (``str(TooSlowError())`` is ``''``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
