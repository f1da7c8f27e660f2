"""An async Vast.ai API client with exactly the calls vk-trio needs (``vast-api.md`` §2).

How a call travels, and why it is built this way:

- Every public method goes through one :meth:`VastClient._call`, which owns the retry policy
  (kopf's ``api.request``): wait for the endpoint's :class:`~vk_trio.vast.pacer.Pacer` slot, send,
  and on 429/5xx/timeouts/connection errors sleep a jittered exponential backoff and try again.
  Callers never write retry loops; when the policy is used up they get a typed error whose
  ``delay`` says when to come back.
- httpx exceptions become Vast errors in one place, :func:`_map_http_errors`, and HTTP statuses
  and Vast error bodies in another, :func:`_classify`. Nothing from httpx escapes this module.
- A create is not idempotent: if its request may have reached Vast and the answer was lost
  (timeout, 5xx, garbage), an instance may exist and a retry could rent a second GPU. So a create
  is retried only on 429 (rejected before processing) and on errors that prove the request never
  left (connect errors); anything else raises :class:`CreateOutcomeUnknown` and the caller looks
  the instance up by label. And once sent, a create is shielded from cancellation until its
  answer arrives, so a pod deleted meanwhile still learns which instance to destroy.
- JSON goes through msgspec with typed decoders, so a malformed answer is a ``VastUnavailable``
  at the boundary, not a ``KeyError`` three layers up. The envelopes require what a success
  carries: a list page without ``instances`` is an error, never "no instances" (the poller and
  the lost-create lookup would read that as "nothing rented" and buy again), and a destroy
  without ``success: true`` is not taken as done.
- The API key is registered with :func:`vk_trio.logs.redact` and only ever put in a request
  header; log lines carry method, endpoint template, status and duration, never bodies.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import httpx
import msgspec
import trio
from loguru import logger

from vk_trio import __version__, metrics
from vk_trio.logs import redact
from vk_trio.retry import VAST_CALL, RetryPolicy
from vk_trio.vast.errors import (
    CreateOutcomeUnknown,
    InstanceNotFound,
    InsufficientCredit,
    OfferGone,
    RateLimited,
    VastAuthError,
    VastError,
    VastInvalidRequest,
    VastUnavailable,
)
from vk_trio.vast.models import CreatedInstance, CreateInstance, Id, Instance, Offer
from vk_trio.vast.pacer import Pacer

__all__ = ["RetryPolicy", "VastClient"]

T = TypeVar("T")

DEFAULT_BASE_URL = "https://console.vast.ai"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""Vast's CLI waits 120 s; a kubelet would rather retry (or report) than hang that long."""
PAGE_SIZE = 25
"""The maximum ``limit`` of ``GET /api/v1/instances/`` (§5.2)."""
LOG_POLL_INTERVAL = 0.3
LOG_POLL_TRIES = 30
"""The logs are uploaded asynchronously; the CLI polls every 0.3 s for ~9 s (§5.6)."""
MAX_PAGES = 400
"""10,000 instances: far more than one account rents. A server handing out ever-new
``next_token`` values must end in an error, not page forever."""


MAX_IN_FLIGHT = 8
"""API requests on the wire at once, each on a kept-alive connection."""

POOL_SIZE = MAX_IN_FLIGHT + 2
"""Connections kept: the API's plus two for log downloads (``result_url``, another host).
No more: httpcore scans its idle connections quadratically for every request."""


class _Endpoint(NamedTuple):
    """One API operation: its pacer lane, method, path template, whether a repeat is safe,
    and whether an exchange, once its pacer slot is taken, must finish (it changes what the
    account pays: a cancelled caller must still learn what it rented, or free what it asked
    to free)."""

    name: str
    method: str
    template: str
    idempotent: bool = True
    completes: bool = False

    def path(self, ident: int | None) -> str:
        return self.template if ident is None else self.template.format(id=ident)


_SEARCH = _Endpoint("search", "POST", "/api/v0/bundles/")
_CREATE = _Endpoint("create", "PUT", "/api/v0/asks/{id}/", idempotent=False, completes=True)
_LIST = _Endpoint("list", "GET", "/api/v1/instances/")
_DESTROY = _Endpoint("destroy", "DELETE", "/api/v0/instances/{id}/", completes=True)
_LOGS = _Endpoint("request_logs", "PUT", "/api/v0/instances/request_logs/{id}/")
_BID = _Endpoint("change_bid", "PUT", "/api/v0/instances/bid_price/{id}/", completes=True)
_USER = _Endpoint("user", "GET", "/api/v0/users/current/")
_CHARGES = _Endpoint("charges", "GET", "/api/v0/charges/")


class _Reply(msgspec.Struct):
    """The small answers (create, label, destroy, request_logs) and every error body (§7).

    Vast puts the text in ``msg``, ``message`` or (429s) ``detail``, depending on the endpoint.
    """

    success: bool | None = None
    error: str | None = None
    msg: str | None = None
    message: str | None = None
    detail: str | None = None
    new_contract: Id | None = None
    result_url: str | None = None

    @property
    def text(self) -> str:
        return self.msg or self.message or self.detail or ""


class _Offers(msgspec.Struct):
    offers: list[Offer]


class _InstancePage(msgspec.Struct):
    """The ``GET /api/v1/instances/`` envelope; ``next_token`` is null on the last page.

    ``instances`` is required and must be a list: a page without it is not an empty page.
    """

    instances: list[Instance]
    next_token: str | None = None
    success: bool | None = None


class _User(msgspec.Struct):
    """``GET /api/v0/users/current/``: only the credit is read (USD left on the account)."""

    credit: float


class _Charge(msgspec.Struct):
    """One result of ``GET /api/v0/charges/``: ``source`` is ``instance-<id>`` for an
    instance's charges, ``amount`` in USD."""

    amount: float = 0.0
    type: str | None = None
    source: str | None = None


class _Charges(msgspec.Struct):
    results: list[_Charge]
    next_token: str | None = None


_REPLY = msgspec.json.Decoder(_Reply)
_USER_DECODER = msgspec.json.Decoder(_User)
_CHARGES_DECODER = msgspec.json.Decoder(_Charges)
_OFFERS = msgspec.json.Decoder(_Offers)
_PAGE = msgspec.json.Decoder(_InstancePage)

_ORDER_BY = msgspec.json.encode([{"col": "id", "dir": "asc"}]).decode()
_AUTH_CODES = frozenset({"auth_error", "not_authorized"})
_AUTH_TEXTS = ("invalid user key", "session expired")
_MISSING_CODES = frozenset({"no_such_instance", "not_found", "invalid_id"})
_OFFER_GONE_CODES = frozenset({"no_such_ask", "resources_unavailable"})
_QUOTA_CODE = "search_quota_exceeded"
_QUOTA_DEFAULT_DELAY = 3600.0
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class VastClient:
    """The Vast.ai API for one account (one API key), paced and retried.

    ``http`` lets tests inject an ``httpx.AsyncClient`` (e.g. with a ``MockTransport``); the
    client closes only an ``AsyncClient`` it created itself. ``pacer`` should be the process's
    single :class:`Pacer`. ``rng`` drives the backoff jitter (seed it for reproducible tests).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        http: httpx.AsyncClient | None = None,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        fence: Callable[[str], None] | None = None,
    ) -> None:
        redact(api_key)
        self._fence = fence
        """Called right before a create or destroy leaves; raises to refuse it (a replica
        that lost its leader election, ``vk_trio.kube.leader``)."""
        self._base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = (
            http
            if http is not None
            else httpx.AsyncClient(
                timeout=DEFAULT_TIMEOUT,
                limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
            )
        )
        self._pacer = pacer if pacer is not None else Pacer()
        self._retry = retry if retry is not None else VAST_CALL
        self._rng = rng if rng is not None else random.Random()
        self._calls: Counter[str] = Counter()
        # Requests queue here (FIFO, cheap) rather than in httpcore's pool, whose queue is
        # scanned per request: quadratic when pacing is off and hundreds of pods call at once.
        self._in_flight = trio.CapacityLimiter(MAX_IN_FLIGHT)
        # Result URLs (pre-signed S3 links) get no Authorization header, like the Vast CLI.
        self._anonymous = {"User-Agent": f"vk-trio/{__version__}"}
        self._headers = {
            **self._anonymous,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        if api_key:  # offer search works without a key (§1)
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"VastClient(base_url={self._base_url!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def calls(self) -> dict[str, int]:
        """HTTP requests sent so far (retries included), by endpoint name."""
        return dict(self._calls)

    # -- operations ------------------------------------------------------------------------

    async def search_offers(self, query: Mapping[str, Any]) -> list[Offer]:
        """Offers matching ``query``, the raw §3.1 query object (sent as the body, unwrapped)."""
        return (await self._call(_SEARCH, _OFFERS, body=query)).offers

    async def create_instance(self, offer_id: int, request: CreateInstance) -> CreatedInstance:
        """Rent offer ``offer_id``. Raises :class:`OfferGone` when it was sold (try the next one)
        and :class:`CreateOutcomeUnknown` when an instance may exist (find it by label).

        ``success:false`` with a ``new_contract`` still rented an instance (stopped, billing
        storage): it is returned with ``started=False`` so the caller tracks or destroys it.
        """
        try:
            reply = await self._call(_CREATE, _REPLY, ident=offer_id, body=request, offer=offer_id)
        except VastUnavailable as err:
            if not err.request_sent:
                raise
            raise CreateOutcomeUnknown(
                f"create on offer {offer_id} may have rented {request.label!r}: {err}",
                offer_id=offer_id,
                label=request.label,
                delay=err.delay,
                status=err.status,
                code=err.code,
            ) from err
        if reply.new_contract is not None:
            started = reply.success is not False
            return CreatedInstance(instance_id=reply.new_contract, started=started)
        where = f"PUT {_CREATE.path(offer_id)}"
        if reply.success is False:
            raise _classify(where, 200, reply, offer=offer_id)
        # success:true, or no verdict at all ({}): Vast may have rented something either way.
        raise CreateOutcomeUnknown(
            f"{where}: answer without new_contract; look {request.label!r} up by label",
            offer_id=offer_id,
            label=request.label,
            status=200,
        )

    async def list_instances(
        self,
        *,
        select_filters: Mapping[str, Any] | None = None,
        select_cols: Sequence[str] | None = None,
    ) -> list[Instance]:
        """Every instance matching ``select_filters`` (§5.2), following ``next_token`` pages;
        only the ``select_cols`` columns (and ``id``) when given, the others left unset."""
        params = {
            "select_filters": msgspec.json.encode(select_filters or {}).decode(),
            "order_by": _ORDER_BY,
            "limit": str(PAGE_SIZE),
        }
        if select_cols is not None:
            params["select_cols"] = msgspec.json.encode(["id", *select_cols]).decode()
        instances: list[Instance] = []
        seen: set[str] = set()
        while True:
            page = await self._call(_LIST, _PAGE, params=params)
            if page.success is False:
                raise VastUnavailable(f"GET {_LIST.template}: success:false on a 200 page")
            instances.extend(page.instances)
            if not page.next_token:
                return instances
            # A broken server must not make us page forever.
            if page.next_token in seen:
                raise VastUnavailable(f"GET {_LIST.template}: next_token repeats")
            if len(seen) + 1 >= MAX_PAGES:
                raise VastUnavailable(f"GET {_LIST.template}: more than {MAX_PAGES} pages")
            seen.add(page.next_token)
            params = {**params, "after_token": page.next_token}

    async def find_by_label(self, label: str) -> list[Instance]:
        """The instances labelled exactly ``label`` (vk-trio labels carry the pod identity)."""
        return await self.list_instances(select_filters={"label": {"eq": label}})

    async def destroy_instance(
        self, instance_id: int, *, http_timeout: float | None = None
    ) -> None:
        """Destroy an instance; one that is already gone counts as destroyed (idempotent).

        Each exchange, once its pacer slot is taken, runs shielded for at most ``http_timeout``
        seconds (default: the client's HTTP timeout). The time spent queued for a slot is not
        part of it: a burst of deletions waits its turn instead of timing out in the queue.
        """
        try:
            reply = await self._call(
                _DESTROY, _REPLY, ident=instance_id, body={}, http_timeout=http_timeout
            )
            _ensure_success(f"DELETE {_DESTROY.path(instance_id)}", reply)
        except InstanceNotFound:
            logger.debug("vast instance already gone", instance_id=instance_id)

    async def change_bid(self, instance_id: int, price: float) -> None:
        """Set an interruptible instance's bid to ``price`` $/h (the GPU part, storage not
        included), as ``vastai change bid`` does (§2): Vast resumes an outbid instance whose
        bid is high enough again. Setting the same bid twice changes nothing, so it is
        retried; fenced and shielded as a create is, since it spends money."""
        reply = await self._call(
            _BID, _REPLY, ident=instance_id, body={"client_id": "me", "price": price}
        )
        if reply.success is False:  # the answer's shape is undocumented: only a "no" fails
            raise _classify(f"PUT {_BID.path(instance_id)}", 200, reply, offer=None)

    async def request_logs(self, instance_id: int, *, tail: int = 1000) -> str:
        """The last ``tail`` lines of the container's logs.

        Two steps (§5.6): ask Vast to upload them, then fetch the returned URL (without the
        API key; it is usually a pre-signed S3 link) until it exists.
        """
        reply = await self._call(_LOGS, _REPLY, ident=instance_id, body={"tail": str(tail)})
        where = f"PUT {_LOGS.path(instance_id)}"
        _ensure_success(where, reply)
        if not reply.result_url:
            raise VastUnavailable(f"{where}: no result_url ({reply.text})")
        return await self._fetch_result(reply.result_url)

    async def credit(self) -> float:
        """The account's credit in USD (``GET /api/v0/users/current/``, ``credit``)."""
        return (await self._call(_USER, _USER_DECODER)).credit

    async def charges(self, *, since: float, until: float) -> dict[int, float]:
        """USD Vast charged per instance id over the epoch range (``GET /api/v0/charges/``,
        instance charges overlapping the ``day`` range), following ``next_token`` pages."""
        day = {"day": {"gte": int(since), "lte": int(until)}, "type": {"in": ["instance"]}}
        params = {"select_filters": msgspec.json.encode(day).decode(), "limit": "100"}
        found: dict[int, float] = {}
        for _ in range(MAX_PAGES):
            page = await self._call(_CHARGES, _CHARGES_DECODER, params=params)
            for charge in page.results:
                source = charge.source or ""
                if source.startswith("instance-") and source[9:].isdigit():
                    found[int(source[9:])] = found.get(int(source[9:]), 0.0) + charge.amount
            if not page.next_token:
                return found
            params = {**params, "after_token": page.next_token}
        raise VastUnavailable(f"GET {_CHARGES.template}: more than {MAX_PAGES} pages")

    # -- machinery -------------------------------------------------------------------------

    async def _call(
        self,
        endpoint: _Endpoint,
        decoder: msgspec.json.Decoder[T],
        *,
        ident: int | None = None,
        params: Mapping[str, str] | None = None,
        body: object = None,
        offer: int | None = None,
        http_timeout: float | None = None,
    ) -> T:
        """Send one operation under the retry policy; return its decoded 2xx answer."""
        where = f"{endpoint.method} {endpoint.path(ident)}"
        url = self._base_url + endpoint.path(ident)
        content = None if body is None else msgspec.json.encode(body)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(
                    endpoint, url, where, decoder, content, params, offer, http_timeout
                )
            except (RateLimited, VastUnavailable) as err:
                if err.code == _QUOTA_CODE:  # a daily quota; its delay points at the reset
                    raise
                err.delay = self._wait(err, attempt)
                safe = endpoint.idempotent or isinstance(err, RateLimited) or not err.request_sent
                if attempt >= self._retry.attempts or not safe:
                    logger.warning("vast call failed, escalating", call=where, error=str(err))
                    raise
                logger.info(
                    "vast call failed; retrying",
                    call=where,
                    attempt=attempt,
                    retry_in=round(err.delay, 2),
                    error=str(err),
                )
                await trio.sleep(err.delay)

    def _wait(self, err: RateLimited | VastUnavailable, attempt: int) -> float:
        """Retry-After if Vast sent a short one, else the policy's backoff for this attempt."""
        retry_after = err.retry_after if isinstance(err, RateLimited) else None
        return self._retry.wait(attempt, retry_after, self._rng)

    async def _attempt(
        self,
        endpoint: _Endpoint,
        url: str,
        where: str,
        decoder: msgspec.json.Decoder[T],
        content: bytes | None,
        params: Mapping[str, str] | None,
        offer: int | None,
        http_timeout: float | None,
    ) -> T:
        """One paced HTTP exchange: the decoded answer, or the typed error it amounts to."""
        await self._pacer.wait(endpoint.name)
        self._calls[endpoint.name] += 1
        started = trio.current_time()
        # Once the pacer slot of a create or destroy is taken, the exchange is shielded
        # (bounded by its timeout): a caller cancelled mid-flight must still learn the id of
        # what it rented, and a destroy that left must be seen through.
        try:
            async with self._in_flight:
                if endpoint.completes and self._fence is not None:
                    self._fence(where)  # the last moment before it is shielded and sent
                with _map_http_errors(where), trio.CancelScope(shield=endpoint.completes):
                    response = await self._http.request(
                        endpoint.method,
                        url,
                        content=content,
                        params=params,
                        headers=self._headers,
                        timeout=httpx.USE_CLIENT_DEFAULT if http_timeout is None else http_timeout,
                    )
        except VastError:
            metrics.observe_vast(endpoint.name, None, None)
            raise
        metrics.observe_vast(endpoint.name, response.status_code, trio.current_time() - started)
        logger.debug(
            "vast {method} {endpoint} -> {status} in {ms:.0f} ms",
            method=endpoint.method,
            endpoint=endpoint.template,
            status=response.status_code,
            ms=(trio.current_time() - started) * 1000,
        )
        if not response.is_success:
            raise _rejection(where, response, offer=offer)
        try:
            return decoder.decode(response.content)
        except msgspec.MsgspecError as exc:
            raise VastUnavailable(
                f"{where} -> HTTP {response.status_code}: unreadable answer ({exc})",
                status=response.status_code,
            ) from exc

    async def _fetch_result(self, url: str) -> str:
        """Poll a logs ``result_url`` until the upload exists (HTTP 200)."""
        last: VastUnavailable | None = None
        for _ in range(LOG_POLL_TRIES):
            await trio.sleep(LOG_POLL_INTERVAL)
            try:
                with _map_http_errors("GET <result_url>"):
                    response = await self._http.get(url, headers=self._anonymous)
            except VastUnavailable as err:
                last = err
                continue
            if response.status_code == 200:
                return response.text
        raise VastUnavailable(
            f"logs not uploaded after {LOG_POLL_TRIES} tries ({last or 'not ready'})"
        ) from last


@contextmanager
def _map_http_errors(where: str) -> Iterator[None]:
    """The one place where httpx exceptions become Vast errors (chained, never leaked).

    Connect failures (and pool/connect timeouts) are marked ``request_sent=False``: the request
    never left, so even a create may be repeated. Every other transport failure may have
    happened after Vast acted on the request.
    """
    try:
        yield
    except _NOT_SENT as exc:
        message = f"{where}: cannot connect ({_describe(exc)})"
        raise VastUnavailable(message, request_sent=False) from exc
    except httpx.TimeoutException as exc:
        raise VastUnavailable(f"{where}: timed out ({_describe(exc)})") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # a misconfigured base URL
        raise VastInvalidRequest(f"{where}: {_describe(exc)}") from exc
    except httpx.HTTPError as exc:  # network and protocol errors, dropped connections
        raise VastUnavailable(f"{where}: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _rejection(where: str, response: httpx.Response, *, offer: int | None) -> VastError:
    """The typed error for a non-2xx response, with its Vast error body when it has one."""
    try:
        reply: _Reply | None = _REPLY.decode(response.content)
    except msgspec.MsgspecError:  # plain text 429s, HTML from a proxy, ...
        reply = None
    error = _classify(where, response.status_code, reply, offer=offer, raw=response.text)
    if isinstance(error, RateLimited):
        error.retry_after = _seconds(response.headers.get("Retry-After"))
        if error.code == _QUOTA_CODE:
            reset = _seconds(response.headers.get("X-RateLimit-Reset"))
            error.delay = max(60.0, reset - time.time()) if reset else _QUOTA_DEFAULT_DELAY
    return error


def _classify(
    where: str, status: int, reply: _Reply | None, *, offer: int | None, raw: str = ""
) -> VastError:
    """Map an HTTP status plus Vast's ``error`` code and text to one error class (§4.3, §7)."""
    code = reply.error if reply else None
    text = reply.text if reply else raw.strip()
    message = (
        f"{where} -> HTTP {status}" + (f" {code}" if code else "") + (f": {text}" * bool(text))
    )
    if status == 429:
        return RateLimited(message, delay=0.0, code=code)
    if status >= 500:
        return VastUnavailable(message, status=status, code=code)
    if offer is not None and code in _OFFER_GONE_CODES:
        return OfferGone(message, offer_id=offer, status=status, code=code)
    if status in (401, 403) or code in _AUTH_CODES or any(t in text.lower() for t in _AUTH_TEXTS):
        return VastAuthError(message, status=status, code=code)
    if code in _MISSING_CODES:
        return InstanceNotFound(message, status=status, code=code)
    if code == "missing_billing":
        return InsufficientCredit(message, status=status, code=code)
    return VastInvalidRequest(message, status=status, code=code)


def _ensure_success(where: str, reply: _Reply) -> None:
    """A 200 with ``success:false`` is a refusal like any 4xx (§5.4, §5.5), and one without
    ``success:true`` (``{}``, ``{"msg": ...}``) is not a confirmation: the call is idempotent,
    so it is retried like a server error rather than taken as done."""
    if reply.success is False:
        raise _classify(where, 200, reply, offer=None)
    if reply.success is not True:
        raise VastUnavailable(f"{where} -> HTTP 200 without success:true: {reply.text!r}")


def _seconds(header: str | None) -> float | None:
    """A header holding a number of seconds (or an epoch), or None (HTTP dates are ignored, and
    so are "inf" and "nan", which would make a caller wait forever or not at all)."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None
