"""What can go wrong talking to the Kubernetes API, as types the rest of vk-trio acts on.

::

    VkError
    └── KubeError                         any failed API call (``status``, ``reason`` attached)
        ├── KubeNotFound          404     the object is gone: callers usually treat it as "done"
        ├── KubeConflict          409     stale resourceVersion / failed uid precondition
        ├── KubeGone              410     watch or continue token expired: relist
        ├── KubeInvalid           422     the API rejected our body (also a PermanentError)
        ├── KubeForbidden         401/403 RBAC or credentials (also a PermanentError)
        ├── KubeTooManyRequests   429     throttled (also a TemporaryError; honours Retry-After)
        ├── KubeServerError       5xx     apiserver trouble (also a TemporaryError)
        └── KubeUnavailable       no HTTP answer: connect error, timeout, broken stream
                                          (also a TemporaryError)

Only ``vk_trio/kube/api.py`` raises these from httpx errors (one mapping, kopf style): no httpx
exception is meant to get past this package. The original exception is chained as
``__cause__``. Messages come from the server's ``Status`` body, cut to ``MESSAGE_LIMIT``
characters so a huge HTML error page never ends up in a log line or an Event.
"""

from __future__ import annotations

from vk_trio.errors import PermanentError, TemporaryError, VkError

MESSAGE_LIMIT = 256
"""Characters of a server message kept in an error (kopf cuts at 256 too)."""


class KubeError(VkError):
    """A Kubernetes API call failed.

    ``status`` is the HTTP status (``None`` when no response arrived), ``reason`` the
    ``Status.reason`` from the body (``"NotFound"``, ``"Expired"``, ...) or ``""``.
    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class KubeNotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeConflict(KubeError):
    """409: a resourceVersion or uid precondition failed, or the object already exists."""


class KubeGone(KubeError):
    """410: the resourceVersion or continue token is too old; the caller must relist."""


class KubeInvalid(KubeError, PermanentError):
    """422: the body was rejected by validation; sending it again cannot succeed."""


class KubeForbidden(KubeError, PermanentError):
    """401/403: our credentials or RBAC do not allow this; an operator has to fix it."""


class KubeTooManyRequests(KubeError, TemporaryError):
    """429: the apiserver's priority-and-fairness throttled us (``retry_after`` says how long)."""


class KubeServerError(KubeError, TemporaryError):
    """5xx: the apiserver (or etcd behind it) failed; usually clears by itself."""


class KubeUnavailable(KubeError, TemporaryError):
    """No usable HTTP response: connection refused/reset, timeout, or a stream cut mid-body."""


def error_for_status(
    status: int, message: str, *, reason: str = "", retry_after: float | None = None
) -> KubeError:
    """The most specific ``KubeError`` for an HTTP ``status`` (the single mapping table)."""
    message = message[:MESSAGE_LIMIT]
    cls: type[KubeError]
    if status == 404:
        cls = KubeNotFound
    elif status == 409:
        cls = KubeConflict
    elif status == 410:
        cls = KubeGone
    elif status == 422:
        cls = KubeInvalid
    elif status in (401, 403):
        cls = KubeForbidden
    elif status == 429:
        cls = KubeTooManyRequests
    elif status >= 500:
        cls = KubeServerError
    else:
        cls = KubeError
    error = cls(message, status=status, reason=reason, retry_after=retry_after)
    if isinstance(error, TemporaryError):
        error.delay = retry_after  # a retrier out of the client's reach waits it too
    return error
