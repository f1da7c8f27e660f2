"""The error kinds the rest of vk-trio acts on.

::

    VkError                      every error vk-trio raises on purpose
    ├── TemporaryError(delay)    try again later; the pod stays Pending (Vast 5xx/429, timeouts)
    └── PermanentError           retrying the same thing cannot help (bad annotation, bad API key)

Clients (``vk_trio.vast``, ``vk_trio.kube``) subclass these, so the pod supervisor decides
"retry or report" from the type alone and never from a message string. A delay travels with a
temporary error, so whoever raised it (e.g. a 429 with ``Retry-After``) sets the pace.
"""

from __future__ import annotations


class VkError(Exception):
    """Base of every error vk-trio raises on purpose."""


class TemporaryError(VkError):
    """A condition that may clear by itself; retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(VkError):
    """Retrying the same request cannot succeed; the cause must be reported and fixed."""
