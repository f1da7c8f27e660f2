"""The one door to the Kubernetes API: ``KubeClient.request`` and ``KubeClient.stream_lines``.

What it owns: an ``httpx.AsyncClient`` (injected, so tests pass a ``MockTransport`` or the
stand-in's URL) and the retry policy. What it retries, kopf style, as a *named set*, under
one ``RetryPolicy`` (``vk_trio.retry.KUBE_CALL`` unless the caller passes another):

- connection errors and timeouts (``KubeUnavailable``), 5xx (``KubeServerError``): only for
  idempotent verbs (GET, PUT, DELETE, and PATCH: every patch vk-trio sends is a merge patch, so
  applying it twice is harmless). A POST is retried only when the request cannot have reached
  the server (connect error/timeout, pool timeout);
- 429 (``KubeTooManyRequests``) for every verb: throttling happens before the request is
  processed. ``Retry-After`` wins over the backoff when the server sends it.

What escalates: every other 4xx at once (404, 409, 410, 422, 401/403, ...), and the last error
once the attempts are used up. Callers never write their own retry loops around ``request``;
a caller with its own schedule (the lease renewer) passes ``retry=NO_RETRY``
(``vk_trio.retry``).

Watches (``stream_lines``) are never retried here: the watch loop in ``watch.py`` decides
whether to re-watch or relist. Their read timeout is off; inactivity is a trio cancel scope
in the watcher.

Also here: the two timestamp formats the API insists on (``format_time``,
``format_micro_time``), because every writer of objects needs one of them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio
from loguru import logger

from vk_trio import __version__
from vk_trio.kube.config import MAX_IN_FLIGHT, ClusterConfig, make_http_client
from vk_trio.kube.errors import (
    MESSAGE_LIMIT,
    KubeError,
    KubeServerError,
    KubeTooManyRequests,
    KubeUnavailable,
    error_for_status,
)
from vk_trio.metrics import KUBE_REQUESTS
from vk_trio.retry import KUBE_CALL, RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT",
    "KubeClient",
    "format_micro_time",
    "format_time",
    "utcnow",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""Per-request timeout for ordinary calls: the apiserver's own request timeout is 60 s, but
nothing vk-trio sends should take more than a few; 30 s leaves room for a loaded server."""

WATCH_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a watch connection; the read side has no timeout (see ``watch.py``)."""

RETRY_AFTER_CAP = 60.0
"""Longest ``Retry-After`` we honour; a server asking for more gets retried after this."""

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_USER_AGENT = f"vk-trio/{__version__}"


def utcnow() -> _dt.datetime:
    """The wall clock in UTC: only for timestamps written into API objects."""
    return _dt.datetime.now(_dt.UTC)


def format_time(when: _dt.datetime) -> str:
    """``metav1.Time``: RFC 3339 at second precision, ``2026-01-02T03:04:05Z``."""
    return when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(when: _dt.datetime) -> str:
    """``metav1.MicroTime``: exactly six fractional digits, ``2026-01-02T03:04:05.123456Z``.

    The apiserver parses MicroTime with a fixed layout; five or seven digits (what
    ``isoformat`` can produce) are rejected, so this never goes through ``isoformat``.
    """
    return when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), RETRY_AFTER_CAP))
    except ValueError:
        return None  # an HTTP-date; the apiserver only sends seconds


def _status_error(response: httpx.Response) -> KubeError:
    """The ``KubeError`` for a non-2xx response, with the ``Status`` message when there is one."""
    message = ""
    reason = ""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        message = str(body.get("message") or "")
        reason = str(body.get("reason") or "")
    if not message:
        message = response.text[:MESSAGE_LIMIT].strip() or response.reason_phrase
    request = response.request
    text = f"{request.method} {request.url.path} -> {response.status_code}: {message}"
    return error_for_status(
        response.status_code, text, reason=reason, retry_after=_retry_after(response)
    )


def _transport_error(exc: httpx.HTTPError, method: str, path: str) -> KubeError:
    """The ``KubeError`` for an httpx exception that carries no (usable) response."""
    if isinstance(exc, httpx.HTTPStatusError):  # pragma: no cover - we never raise_for_status
        return _status_error(exc.response)
    return KubeUnavailable(f"{method} {path}: {_describe(exc)}"[:MESSAGE_LIMIT])


def _describe(exc: BaseException) -> str:
    """``Type: message`` for ``exc`` and its causes: httpx often wraps the useful part
    (``CERTIFICATE_VERIFY_FAILED``, ``Connection refused``) in an exception without text."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]  # trio's "all attempts failed": show the first
            continue
        text = str(current)
        part = type(current).__name__ + (
            f": {text}" if text and text != type(current).__name__ else ""
        )
        if not parts or text not in parts[-1]:
            parts.append(part)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def _should_retry(error: KubeError, *, idempotent: bool) -> bool:
    if isinstance(error, KubeTooManyRequests):
        return True
    if isinstance(error, KubeServerError):
        return idempotent
    if isinstance(error, KubeUnavailable):
        return idempotent or isinstance(error.__cause__, _NOT_SENT)
    return False


class KubeClient:
    """A thin, typed-error client for the Kubernetes REST API.

    Build it with ``KubeClient.from_config(config)`` in the product, or hand it any
    ``httpx.AsyncClient`` (with ``base_url`` set, or pass ``base_url``) in tests. It owns that
    client: ``aclose()`` (or ``async with``) closes it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        retry: RetryPolicy = KUBE_CALL,
        watch_connect_timeout: float = WATCH_CONNECT_TIMEOUT,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/") if base_url else ""
        self._retry = retry
        self._watch_timeout = httpx.Timeout(watch_connect_timeout, read=None)
        # Requests wait here, in FIFO order, rather than in httpcore's pool: its queue is
        # scanned per request, which made 200 pods' status patches cost seconds of CPU.
        self._in_flight = trio.CapacityLimiter(max_in_flight)

    @classmethod
    def from_config(
        cls,
        config: ClusterConfig,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = KUBE_CALL,
    ) -> KubeClient:
        """A client for the cluster ``config`` describes (TLS verified, bearer/cert auth)."""
        return cls(make_http_client(config, timeout=timeout), retry=retry)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content_type: str | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one API request and return the decoded JSON body (``None`` if empty).

        ``json`` is encoded with msgspec and sent as ``content_type`` (default
        ``application/json``; pass ``application/strategic-merge-patch+json`` or
        ``application/merge-patch+json`` for patches). ``retry`` overrides the client's
        policy for this call (``NO_RETRY``: one attempt); ``idempotent`` overrides the
        verb-based guess. Raises a ``KubeError`` subclass; see the module docstring for which
        ones are retried first.
        """
        method = method.upper()
        url = self._base + path
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        body: bytes | None = None
        if json is not None:
            body = msgspec.json.encode(json)
            headers["Content-Type"] = content_type or "application/json"
        policy = self._retry if retry is None else retry
        retry_all = method in _IDEMPOTENT if idempotent is None else idempotent
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send_once(method, url, path, params, body, headers)
            except KubeError as error:
                if not _should_retry(error, idempotent=retry_all):
                    raise
                if attempt >= policy.attempts:
                    if policy.attempts > 1:  # else the caller owns retrying (and logging)
                        logger.warning(
                            "kube request failed, escalating",
                            method=method,
                            path=path,
                            attempts=attempt,
                            error=str(error),
                        )
                    raise
                delay = policy.wait(attempt, error.retry_after)
                logger.info(
                    "kube request failed; retrying",
                    method=method,
                    path=path,
                    error=str(error),
                    retry_in=round(delay, 2),
                    attempt=attempt,
                )
                await trio.sleep(delay)

    async def _send_once(
        self,
        method: str,
        url: str,
        path: str,
        params: dict[str, Any] | None,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Any:
        try:
            async with self._in_flight:
                response = await self._http.request(
                    method, url, params=params, content=body, headers=headers
                )
        except httpx.HTTPError as exc:
            KUBE_REQUESTS.labels(method, "error").inc()
            raise _transport_error(exc, method, path) from exc
        KUBE_REQUESTS.labels(method, str(response.status_code)).inc()
        if not response.is_success:
            raise _status_error(response)
        if not response.content:
            return None
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError as exc:
            raise KubeServerError(
                f"{method} {path}: undecodable response body: {exc}", status=response.status_code
            ) from exc

    @asynccontextmanager
    async def stream_lines(
        self, path: str, *, params: dict[str, Any] | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streaming GET (a watch) and give back an iterator over its non-empty lines.

        ::

            async with client.stream_lines("/api/v1/pods", params={"watch": "1"}) as lines:
                async for line in lines: ...

        Opening raises the mapped ``KubeError`` for a non-2xx answer (e.g. ``KubeGone`` for a
        410) or ``KubeUnavailable``; reading raises ``KubeUnavailable`` when the stream breaks.
        No retries and no read timeout: the caller owns both.
        """
        url = self._base + path
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        try:
            async with self._http.stream(
                "GET", url, params=params, headers=headers, timeout=self._watch_timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise _status_error(response)
                yield _iter_lines(response, path)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, "GET", path) from exc


async def _iter_lines(response: httpx.Response, path: str) -> AsyncIterator[bytes]:
    """Split a chunked body on ``\\n`` without decoding it (msgspec decodes bytes directly)."""
    buffer = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if line.strip():
                    yield line
    except httpx.HTTPError as exc:
        raise _transport_error(exc, "GET", path) from exc
    if bytes(buffer).strip():
        yield bytes(buffer)
