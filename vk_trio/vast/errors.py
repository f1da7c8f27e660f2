"""What can go wrong when talking to Vast.ai, as types the pod supervisor can act on.

::

    VkError
    └── VastError(status, code)            every failure of a Vast API call
        ├── OfferGone(offer_id)            404/410 no_such_ask: the offer was sold; try the next one
        ├── InstanceNotFound               no_such_instance/not_found/invalid_id: it is gone
        ├── RateLimited ─────── TemporaryError   429 after retries; ``delay`` says when to come back
        ├── VastUnavailable ─── TemporaryError   5xx, timeout, connection error, unreadable body
        │   └── CreateOutcomeUnknown(offer_id, label)
        │                                  a create that may or may not have bought an instance:
        │                                  look it up by label before buying again
        ├── VastAuthError ───── PermanentError   401/403, 404 "Invalid user key"/"Session expired"
        └── VastInvalidRequest ─ PermanentError  400 and other 4xx the request itself caused
            └── InsufficientCredit             missing_billing: top up the account

``TemporaryError``/``PermanentError`` come from :mod:`vk_trio.errors`, so callers that do not
care about Vast decide "retry later or give up" from the type alone. ``OfferGone`` is neither:
the same request will never succeed, but a different offer may, which only offer selection knows.

Messages carry the HTTP status, Vast's ``error`` code and its ``msg`` (truncated), never the API
key: every message goes through :func:`vk_trio.logs.scrub` in case a server echoes a header.
"""

from __future__ import annotations

from vk_trio.errors import PermanentError, TemporaryError, VkError
from vk_trio.logs import scrub

__all__ = [
    "CreateOutcomeUnknown",
    "InstanceNotFound",
    "InsufficientCredit",
    "OfferGone",
    "RateLimited",
    "VastAuthError",
    "VastError",
    "VastInvalidRequest",
    "VastUnavailable",
]

MAX_MESSAGE = 300
"""Vast messages can embed whole request echoes; a log line needs only the gist."""


class VastError(VkError):
    """A Vast API call failed. ``status`` is the HTTP status (None without a response) and
    ``code`` Vast's machine-readable ``error`` field (e.g. ``"no_such_ask"``), if it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        text = scrub(message)
        super().__init__(text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…")
        self.status = status
        self.code = code


class OfferGone(VastError):
    """The offer cannot be bought (sold, withdrawn, or its machine cannot start now)."""

    def __init__(
        self, message: str, *, offer_id: int, status: int | None = None, code: str | None = None
    ):
        super().__init__(message, status=status, code=code)
        self.offer_id = offer_id


class InstanceNotFound(VastError):
    """The instance does not exist (any more), or is not this account's."""


class RateLimited(VastError, TemporaryError):
    """Vast kept answering 429 after the client's own retries; wait ``delay`` seconds.

    ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent one (Vast usually
    does not). A daily search quota (``code == "search_quota_exceeded"``) is never retried; its
    ``delay`` runs to the quota reset.
    """

    delay: float

    def __init__(
        self,
        message: str,
        *,
        delay: float,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
    ):
        super().__init__(message, status=status, code=code)
        self.delay = delay
        self.retry_after = retry_after


class VastUnavailable(VastError, TemporaryError):
    """Vast could not be reached or answered with a server error; wait ``delay`` seconds.

    ``request_sent`` is False only when the request provably never reached Vast (the connection
    could not be opened), which is what makes even a create safe to repeat.
    """

    delay: float

    def __init__(
        self,
        message: str,
        *,
        delay: float = 10.0,
        status: int | None = None,
        code: str | None = None,
        request_sent: bool = True,
    ):
        super().__init__(message, status=status, code=code)
        self.delay = delay
        self.request_sent = request_sent


class CreateOutcomeUnknown(VastUnavailable):
    """A create was sent but its answer was lost (timeout, 5xx, garbage): an instance may exist.

    It is never retried blindly, because a retry could rent a second GPU. The caller must look
    the instance up by ``label`` (``VastClient.find_by_label``) before buying again.
    """

    def __init__(
        self,
        message: str,
        *,
        offer_id: int,
        label: str,
        delay: float = 10.0,
        status: int | None = None,
        code: str | None = None,
    ):
        super().__init__(message, delay=delay, status=status, code=code)
        self.offer_id = offer_id
        self.label = label


class VastAuthError(VastError, PermanentError):
    """The API key is wrong, expired, or lacks the permission for this call."""


class VastInvalidRequest(VastError, PermanentError):
    """Vast rejected the request itself (400 and similar); repeating it cannot help."""


class InsufficientCredit(VastInvalidRequest):
    """The account has no credit left (``missing_billing``)."""
