"""One image's exchange with its registry: requests, authentication, redirects, statuses.

A :class:`Session` lives for one lookup (one image, one set of credentials). It sends each
request; on a 401 it reads the challenge, gets a token from the realm (anonymously, or with
HTTP basic auth when the pod's pull secrets have credentials for the registry) or prepares
HTTP basic auth for a ``Basic`` challenge, and sends the request once more; the token is then
reused for the rest of the lookup (same repository, same scope).

Nothing from httpx escapes: transport failures and statuses become
:class:`~vk_trio.registry.errors.ImageConfigUnavailable` here, in :meth:`Session._failure` and
:func:`_transport_failure`. Bodies are read with a size limit, so a hostile registry cannot
fill memory. Redirects (blob storage on another host) are followed by hand, so each hop
passes :func:`~vk_trio.registry.auth.check_url` and the ``Authorization`` header never leaves
the registry's origin. Tokens and passwords never appear in a log line or a message.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Mapping
from typing import NamedTuple

import httpx
import msgspec
from loguru import logger

from vk_trio.registry.auth import base_url, check_url, parse_challenge
from vk_trio.registry.errors import (
    IMAGE_INVALID,
    IMAGE_NOT_FOUND,
    IMAGE_UNAUTHORIZED,
    REGISTRY_UNAVAILABLE,
    ImageConfigUnavailable,
)
from vk_trio.registry.models import ErrorBody, TokenReply
from vk_trio.registry.reference import ImageReference

__all__ = ["Answer", "Session"]

MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
MAX_TOKEN_BODY = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN = msgspec.json.Decoder(TokenReply)
_ERRORS = msgspec.json.Decoder(ErrorBody)


class Answer(NamedTuple):
    """A successful response: its status, headers and (capped) body."""

    status: int
    headers: httpx.Headers
    body: bytes


class Session:
    """Requests about ``ref`` on its registry, authenticated as needed (see the module doc)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        ref: ImageReference,
        *,
        image: str,
        credentials: tuple[str, str] | None,
    ) -> None:
        self._http = http
        self._ref = ref
        self.image = image
        """The reference as the pod wrote it, for messages."""
        self._credentials = credentials
        self._base = base_url(ref.registry)
        self._origin = httpx.URL(self._base)
        self._authorization: str | None = None
        self.token_url = ""
        """The token URL of the last Bearer challenge, without credentials: where anyone may
        ask for the same anonymous token (``""``: no token asked for)."""

    def url(self, kind: str, reference: str) -> httpx.URL:
        """``<base>/v2/<repository>/<kind>/<reference>`` (kind: ``manifests`` or ``blobs``)."""
        return httpx.URL(f"{self._base}/v2/{self._ref.repository}/{kind}/{reference}")

    async def get(
        self,
        kind: str,
        reference: str,
        *,
        limit: int,
        accept: str | None = None,
        head: bool = False,
    ) -> Answer:
        """GET (or HEAD) one manifest or blob, authenticating once if challenged."""
        url = self.url(kind, reference)
        answer = await self._send(url, accept=accept, limit=limit, head=head)
        if answer.status == 401:  # no token yet, an expired one, or one of another scope
            await self._authenticate(answer.headers)
            answer = await self._send(url, accept=accept, limit=limit, head=head)
        if answer.status != 200:
            raise self._failure(answer, what=f"{kind[:-1]} {reference}")
        return answer

    async def _send(self, url: httpx.URL, *, accept: str | None, limit: int, head: bool) -> Answer:
        """One request, following redirects by hand; any status is returned, not raised."""
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept": accept} if accept else {}
            if self._authorization and _same_origin(url, self._origin):
                headers["Authorization"] = self._authorization
            answer = await self._exchange("HEAD" if head else "GET", url, headers, limit)
            location = answer.headers.get("location")
            if answer.status not in _REDIRECTS or not location:
                return answer
            url = url.join(location)
        raise self._unavailable(f"more than {MAX_REDIRECTS} redirects", REGISTRY_UNAVAILABLE)

    async def _exchange(
        self, method: str, url: httpx.URL, headers: dict[str, str], limit: int
    ) -> Answer:
        refused = check_url(url)
        if refused is not None:
            raise self._unavailable(refused, REGISTRY_UNAVAILABLE)
        started = time.monotonic()
        try:
            async with self._http.stream(method, url, headers=headers) as response:
                cap = limit if response.status_code == 200 else MAX_ERROR_BODY
                body = await self._read(response, cap)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc, self.image, url) from exc
        logger.debug(
            "registry request",
            method=method,
            host=url.host,
            path=url.path,
            status=response.status_code,
            seconds=round(time.monotonic() - started, 3),
        )
        return Answer(response.status_code, response.headers, body)

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise self._unavailable(
                    f"{response.url.path} is larger than {limit} bytes", IMAGE_INVALID
                )
        return bytes(body)

    async def _authenticate(self, headers: httpx.Headers) -> None:
        """Prepare the ``Authorization`` the registry's challenge asks for."""
        challenge = parse_challenge(headers.get("www-authenticate", ""))
        if challenge is None:
            raise self._unavailable("401 without a WWW-Authenticate challenge", IMAGE_UNAUTHORIZED)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise self._unavailable(self._no_credentials(), IMAGE_UNAUTHORIZED, status=401)
            self._authorization = _basic(self._credentials)
        elif challenge.scheme == "bearer":
            self._authorization = f"Bearer {await self._token(challenge.params)}"
        else:
            raise self._unavailable(
                f"unsupported authentication scheme {challenge.scheme!r}", IMAGE_UNAUTHORIZED
            )

    async def _token(self, params: Mapping[str, str]) -> str:
        """A bearer token from the challenge's realm, for pulling this repository."""
        realm = params.get("realm", "")
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            url = None
        if url is None or not url.host:
            raise self._unavailable(f"the token realm {realm!r} is not a URL", IMAGE_UNAUTHORIZED)
        query = {"scope": params.get("scope") or f"repository:{self._ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        self.token_url = str(url.copy_merge_params(query))
        headers = {}
        if self._credentials is not None:
            query["account"] = self._credentials[0]
            headers["Authorization"] = _basic(self._credentials)
        answer = await self._exchange("GET", url.copy_merge_params(query), headers, MAX_TOKEN_BODY)
        if answer.status != 200:
            raise self._failure(answer, what="token")
        try:
            reply = _TOKEN.decode(answer.body)
        except msgspec.DecodeError:
            reply = TokenReply()
        token = reply.token or reply.access_token
        if not token:
            raise self._unavailable("the token server sent no token", IMAGE_UNAUTHORIZED)
        return token

    def _failure(self, answer: Answer, *, what: str) -> ImageConfigUnavailable:
        """The error a non-200 answer means (see ``errors`` for the reasons)."""
        status = answer.status
        detail = f"{what}: HTTP {status}"
        summary = _summary(answer.body)
        if summary:
            detail += f" ({summary})"
        if status in (401, 403):
            who = (
                self._no_credentials()
                if self._credentials is None
                else f"the pull secret's credentials for {self._ref.registry} were refused"
            )
            return self._unavailable(f"{detail}; {who}", IMAGE_UNAUTHORIZED, status=status)
        if status == 404:
            return self._unavailable(f"not found: {detail}", IMAGE_NOT_FOUND, status=status)
        if status == 429 or status >= 500:
            return ImageConfigUnavailable(
                f"image {self.image}: registry {self._ref.registry} unavailable: {detail}",
                image=self.image,
                reason=REGISTRY_UNAVAILABLE,
                status=status,
                delay=_retry_after(answer.headers),
            )
        return self._unavailable(detail, IMAGE_INVALID, status=status)

    def _no_credentials(self) -> str:
        return f"no pull secret has credentials for {self._ref.registry}"

    def _unavailable(
        self, detail: str, reason: str, *, status: int | None = None
    ) -> ImageConfigUnavailable:
        return ImageConfigUnavailable(
            f"image {self.image}: {detail}", image=self.image, reason=reason, status=status
        )


def _same_origin(url: httpx.URL, origin: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)


def _basic(credentials: tuple[str, str]) -> str:
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _summary(body: bytes) -> str:
    """The registry's own error codes and messages, if the body is a distribution error."""
    try:
        return _ERRORS.decode(body).summary()
    except msgspec.DecodeError:
        return ""


def _retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), capped at an hour."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0)


def _transport_failure(exc: httpx.HTTPError, image: str, url: httpx.URL) -> ImageConfigUnavailable:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    cause = type(exc).__name__
    return ImageConfigUnavailable(
        f"image {image}: request to {url.host} {kind} ({cause}: {exc})",
        image=image,
        reason=REGISTRY_UNAVAILABLE,
    )
