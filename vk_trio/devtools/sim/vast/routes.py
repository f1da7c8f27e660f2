"""The routing table (``/api/`` and ``/_sim/`` routes, by handler name), rate limits and the
API's error bodies."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from vk_trio.devtools.sim.vast.config import BURSTS, RATE_LIMITS
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.http_server import Request, Response


class RateLimiter:
    """Token buckets per (endpoint, identity) on the trio clock; ``factor`` scales intervals."""

    def __init__(self, factor: float) -> None:
        self._factor = factor
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def check(self, endpoint: str, identity: str, now: float) -> float | None:
        """None when the call may go ahead (and is counted), else the endpoint's threshold."""
        threshold = RATE_LIMITS.get(endpoint)
        interval = (threshold or 0.0) * self._factor
        if threshold is None or interval <= 0:
            return None
        burst = BURSTS.get(endpoint, 1)
        tokens, last = self._buckets.get((endpoint, identity), (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) / interval)
        if tokens < 1.0:
            self._buckets[(endpoint, identity)] = (tokens, now)
            return threshold
        self._buckets[(endpoint, identity)] = (tokens - 1.0, now)
        return None


RouteHandler = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """One endpoint: the method and path it answers, and the handler method that serves it."""

    method: str
    pattern: re.Pattern[str]
    endpoint: str
    """The name used in stats and rate limits, e.g. ``PUT /api/v0/asks/{id}/``."""
    handler: str
    auth: bool
    counted: bool
    """Counted in ``stats()``: every call a client makes, log downloads included."""
    gated: bool
    """Subject to latency, injected failures, auth and rate limits: the ``/api/`` calls."""


def _route(method: str, template: str, handler: str, *, auth: bool = True) -> Route:
    """An ``/api/`` route; ``{name}`` in ``template`` captures one path segment."""
    return _make_route(method, template, handler, auth=auth, counted=True, gated=True)


def _make_route(
    method: str, template: str, handler: str, *, auth: bool, counted: bool, gated: bool
) -> Route:
    parts = re.split(r"\{(\w+)\}", template.rstrip("/"))
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return Route(
        method, re.compile(regex + "/"), f"{method} {template}", handler, auth, counted, gated
    )


def _control(method: str, template: str, handler: str, *, counted: bool = False) -> Route:
    """A simulator route: never authenticated, never failed or rate limited."""
    return _make_route(method, template, handler, auth=False, counted=counted, gated=False)


ROUTES: list[Route] = [
    _route("POST", "/api/v0/bundles/", "_search", auth=False),
    _route("GET", "/api/v0/bundles/", "_search", auth=False),
    _route("PUT", "/api/v0/search/asks/", "_search", auth=False),
    _route("PUT", "/api/v0/asks/{id}/", "_create"),
    _route("GET", "/api/v1/instances/", "_list"),
    _route("GET", "/api/v0/instances/", "_legacy_list"),
    _route("PUT", "/api/v0/instances/request_logs/{id}/", "_request_logs"),
    _route("PUT", "/api/v0/instances/bid_price/{id}/", "_change_bid"),
    _route("GET", "/api/v0/instances/{id}/", "_show"),
    _route("PUT", "/api/v0/instances/{id}/", "_modify"),
    _route("DELETE", "/api/v0/instances/{id}/", "_destroy"),
    _route("GET", "/api/v0/users/current/", "_current_user"),
    _route("GET", "/api/v0/charges/", "_charges"),
    _route("GET", "/api/v0/gpu_names/unique/", "_gpu_names", auth=False),
    _control("GET", "/_sim/logs/{token}.log", "_fetch_logs", counted=True),
    _control("GET", "/_sim/ledger", "_get_ledger"),
    _control("GET", "/_sim/stats", "_get_stats"),
    _control("GET", "/_sim/create-requests", "_get_create_requests"),
    _control("GET", "/_sim/faults", "_get_faults"),
    _control("POST", "/_sim/faults", "_post_faults"),
]


def error_response(status: int, error: str, msg: str, **extra: Any) -> Response:
    """A Vast error body (``success: false``, ``error``, ``msg``) with ``status``."""
    return Response.json({"success": False, "error": error, "msg": msg, **extra}, status)


def rate_limited(threshold: float) -> Response:
    """The 429 the API returns when a client calls an endpoint too often."""
    return error_response(
        429, "rate_limit_exceeded", f"API requests too frequent endpoint threshold={threshold}"
    )


def no_such_instance(instance_id: int) -> Response:
    """The 404 the API returns for an instance id it does not know."""
    return error_response(404, "no_such_instance", f"Instance {instance_id} not found.")


def path_id(params: Mapping[str, str]) -> int | None:
    """The ``{id}`` path segment as an int, or None when it is not one (a 400 for the API)."""
    try:
        return int(params["id"])
    except ValueError:
        return None


def json_object_body(request: Request) -> Row | None:
    """The body as a JSON object (no body is ``{}``); None when it is not JSON or not an object."""
    try:
        body = request.json()
    except msgspec.DecodeError:
        return None
    if body is None:
        return {}
    return body if isinstance(body, dict) else None


def json_query_param(request: Request, name: str, default: Any) -> Any:
    """A query parameter holding JSON, or ``default`` when absent; ``ValueError`` when not JSON."""
    raw = request.param(name)
    if not raw:
        return default
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ValueError(f"{name} is not valid JSON") from None
