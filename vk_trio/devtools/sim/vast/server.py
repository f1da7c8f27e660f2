"""A simulated Vast.ai API: marketplace, instances, rate limits, faults and a ledger.

It serves the subset of ``vast-api.md`` that vk-trio and the real ``vastai`` CLI use, with the
real API's quirks kept on purpose (numbers sent as strings in queries, ``public_ipaddr`` with
trailing whitespace, ``HostPort`` as a string, ``{"instances": null}`` for a missing instance,
410 on the legacy list), so that a client which passes against the simulator has already met
them.

Time: instance status is computed lazily from ``trio.current_time()`` (null → created → loading
→ running over ``boot_seconds``), so tests can use trio's ``MockClock`` and nothing runs in the
background. Rate limits use the same clock. Wall time appears only in the API's epoch fields.

Determinism: every id, price, port, key and fault decision comes from RNGs seeded by
``VastSimConfig.seed``; the same seed and the same request sequence give the same answers.

Control surface for tests (never authenticated): ``GET /_sim/ledger``, ``GET /_sim/stats``,
``GET|POST /_sim/faults`` and the ``VastSim`` methods documented below. Instance logs are served
from ``/_sim/logs/<token>.log`` without auth, the way the real API hands out S3 URLs.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import math
import random
import re
import socket as stdlib_socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.http_server import Request, Response, serve_connection, serve_http

RATE_LIMITS: dict[str, float] = {
    "PUT /api/v0/asks/{id}/": 4.5,
    "GET /api/v0/instances/{id}/": 2.0,
    "PUT /api/v0/instances/{id}/": 1.0,
    "DELETE /api/v0/instances/{id}/": 3.0,
    "GET /api/v1/instances/": 1.0,
    "POST /api/v0/bundles/": 2.0,
    "GET /api/v0/bundles/": 2.0,
    "PUT /api/v0/search/asks/": 2.0,
    "GET /api/v0/instances/": 20.0,
}
"""Minimum seconds between calls per endpoint and identity (the ``x-rateLimit`` thresholds)."""

BURSTS: dict[str, int] = {
    "POST /api/v0/bundles/": 3,
    "GET /api/v0/bundles/": 3,
    "PUT /api/v0/search/asks/": 3,
}
"""Calls allowed back to back before the interval applies: search is ``low_volume_burst``."""

LOG_POLLS_BEFORE_READY = 1
"""Log URLs answer 404 this many times first, as S3 does until the host has uploaded them."""

LOG_POLLS_WHEN_SLOW = 20
"""With the ``logs_slow`` fault: 404s before the upload appears (a busy host)."""

PAGE_SIZE = 25
"""``GET /api/v1/instances/`` returns at most this many rows per page."""

WALK_SECONDS = 10.0
"""How long the pages after a listing's first follow the rows that page found (membership and
order; each row is rendered as it is when its page is asked); a page asked later starts a
fresh walk from its cursor. The real API's keyset pages are each a fresh query: an
instance created or booted mid-walk shows in the next listing here, not in this one."""

WALKS_KEPT = 16
"""Listings under way remembered at once (by filters and order)."""

_OCI_FAILURE = (
    "Error response from daemon: failed to create task for container: failed to create shim "
    "task: OCI runtime create failed: runc create failed: unable to start container process: "
    'exec: "{command}": executable file not found in $PATH: unknown'
)


class Faults(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What goes wrong, and how often. Rates are probabilities in 0..1 drawn from a seeded RNG.

    Request-level faults (``rate_429``, ``rate_5xx``, ``latency``) hit every ``/api/`` call.
    Create-level faults are drawn once per create call; instance-level ones once per instance,
    at creation, so an instance's fate is fixed from its birth and reproducible.
    """

    rate_429: float = 0.0
    """Answer 429 ``rate_limit_exceeded`` regardless of the real limiter."""
    rate_5xx: float = 0.0
    """Answer 500/502/503 without doing anything."""
    latency: float = 0.0
    """Seconds added before every API answer."""
    offer_taken: float = 0.0
    """The offer was bought by someone else between search and create: 404 ``no_such_ask``."""
    lose_create_response: float = 0.0
    """The instance is created, but the client gets a 502 instead of the answer."""
    stuck_loading: float = 0.0
    """The instance never leaves ``loading``."""
    oci_failure: float = 0.0
    """The instance stays ``created`` with "OCI runtime create failed" in ``status_msg``."""
    host_offline: float = 0.0
    """The host goes ``offline`` one to three boot times after the instance is running."""
    instance_exit: float = 0.0
    """The container exits (``exited``, code 1) one to three boot times after running."""
    logs_slow: float = 0.0
    """A ``request_logs`` result URL answers 404 for ``LOG_POLLS_WHEN_SLOW`` polls first."""
    logs_missing: float = 0.0
    """A ``request_logs`` result is never uploaded: its URL answers 404 forever."""


class VastSimConfig(msgspec.Struct, kw_only=True):
    """How a simulator behaves; everything has a default suited to interactive use."""

    seed: int = 0
    """Seeds the marketplace, ids, ports, keys and fault draws."""
    boot_seconds: float = 3.0
    """Seconds from create to ``running`` (the real API takes minutes)."""
    api_key: str | None = None
    """The only key accepted; None accepts any non-empty key (a missing key is still 401)."""
    rate_limits: str = "real"
    """``real`` (the API's intervals), ``off``, or a factor such as ``0.01`` for fast tests."""
    offers_path: str | None = None
    """A JSON list of offers to use as the market, as it is; None uses the packaged seeded one."""
    faults: Faults = Faults()
    log_interval: float = 5.0
    """Seconds of run time per line a running container adds to its logs."""
    serve_ports: bool = False
    """Make each running instance really answer on its mapped ports: ``public_ipaddr`` is
    127.0.0.1 and every mapped TCP port is a loopback HTTP listener (``_AppPorts``)."""
    app_ready_after: float = 0.0
    """With ``serve_ports``: seconds after ``running`` during which the app answers 503
    (a model still loading), then 200 on any path."""


# ---------------------------------------------------------------------------------------------
# Instances


@dataclass
class _Instance:
    """One rented contract; its status is derived from the clock, never stored."""

    id: int
    offer: Row
    body: Row
    label: str | None
    created_at: float
    """trio clock: when the create call succeeded (billing starts here)."""
    start_date: float
    """Wall clock epoch, as the API reports it."""
    dph_total: float
    is_bid: bool
    ports: dict[str, list[dict[str, str]]]
    direct_ports: tuple[int, int]
    public_ipaddr: str
    api_key: str
    boot_from: float
    """trio clock: when the current boot began (create, or the last start)."""
    intended_status: str = "running"
    stuck_loading: bool = False
    oci_failure: bool = False
    offline_at: float | None = None
    exit_at: float | None = None
    exit_code: int = 1
    destroyed_at: float | None = None

    def phase(self, now: float, boot: float) -> tuple[str | None, str | None]:
        """``(actual_status, status_msg)`` at trio time ``now``."""
        if self.intended_status == "stopped":
            return "stopped", "Instance stopped"
        if self.offline_at is not None and now >= self.offline_at:
            return "offline", "Host is offline"
        if self.exit_at is not None and now >= self.exit_at:
            return "exited", f"Container exited with code {self.exit_code}"
        # Absolute marks, computed exactly as next_change computes them: comparing elapsed
        # time instead can differ by one float ulp at a mark, and a waiter woken at that
        # mark would find no later one and sleep forever.
        created, loading, running = (self.boot_from + f * boot for f in (0.2, 0.4, 1.0))
        if now < created:
            return None, None
        if now < loading:
            return "created", "Creating container"
        if self.oci_failure:
            return "created", _OCI_FAILURE.format(command=self.body.get("onstart") or "sh")
        if now < running or self.stuck_loading:
            return "loading", f"{_digest(self.id, 'layer')[:12]}: Pull complete\n"
        image = self.image.replace(":", "_")  # the real message spells tags this way
        return "running", f"success, running {image}/{self.runtype}"

    def next_change(self, now: float, boot: float) -> float:
        """The next trio time at which ``phase`` may answer differently (inf if never)."""
        marks = [self.boot_from + f * boot for f in (0.2, 0.4, 1.0)]
        marks += [t for t in (self.offline_at, self.exit_at) if t is not None]
        return min((t for t in marks if t > now), default=math.inf)

    @property
    def image(self) -> str:
        return str(self.body.get("image") or "")

    @property
    def runtype(self) -> str:
        return str(self.body.get("runtype") or "ssh")

    def cost(self, now: float) -> float:
        """Dollars billed: ``dph_total`` for every hour between create and destroy."""
        end = self.destroyed_at if self.destroyed_at is not None else now
        return self.dph_total * max(0.0, end - self.created_at) / 3600.0


class _AppPorts:
    """An instance's mapped TCP ports on 127.0.0.1, for ``serve_ports``.

    Each socket is bound at creation to a port the OS picks (that port is the ``HostPort``
    the API reports), so two instances, or another process, can never collide on it.
    """

    def __init__(self, specs: list[str]) -> None:
        self._sockets: dict[str, stdlib_socket.socket] = {}
        for spec in specs:
            if spec.endswith("/tcp"):
                self._sockets[spec] = self._bind(0)
        self._ports = {spec: sock.getsockname()[1] for spec, sock in self._sockets.items()}

    @staticmethod
    def _bind(port: int) -> stdlib_socket.socket:
        # A numeric loopback bind never blocks: no name lookup, no network.
        sock = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def bindings(self) -> dict[str, list[dict[str, str]]]:
        return {
            spec: [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
            for spec, port in self._ports.items()
        }

    async def serve(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        """Answer HTTP on every port until cancelled, then close them (trio takes each
        socket over, so ``rebind`` makes new ones on the same ports)."""
        listeners = []
        for sock in self._sockets.values():
            sock.listen(128)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        try:
            serve = functools.partial(serve_connection, handler=handler)
            await trio.serve_listeners(serve, listeners)
        finally:
            for listener in listeners:
                listener.socket.close()

    def rebind(self) -> None:
        """Stop listening (connections are refused again), keeping each port."""
        for spec, port in self._ports.items():
            self._sockets[spec].close()
            self._sockets[spec] = self._bind(port)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()


def _digest(*parts: object) -> str:
    """A stable hex string for made-up container hashes and tokens."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _port_specs(env: Mapping[str, Any]) -> list[str]:
    """Container port specs (``"8000/tcp"``) from ``-p host:container[/proto]`` env keys."""
    specs = ["22/tcp"]
    for key in env:
        match = re.fullmatch(r"-p\s+(?:\d+:)?(\d+)(?:/(tcp|udp))?", key.strip())
        if match:
            spec = f"{match[1]}/{match[2] or 'tcp'}"
            if spec not in specs:
                specs.append(spec)
    return specs


@dataclass
class _LogUpload:
    """Logs captured by a ``request_logs`` call, served once the "upload" is done."""

    text: str
    polls: int = 0
    polls_needed: float = LOG_POLLS_BEFORE_READY


# ---------------------------------------------------------------------------------------------
# Rate limiting


class _RateLimiter:
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


def rate_factor(mode: str) -> float:
    """``real`` → 1, ``off`` → 0, a number → that factor (``ValueError`` otherwise)."""
    if mode == "real":
        return 1.0
    if mode == "off":
        return 0.0
    factor = float(mode)
    if not factor >= 0:
        raise ValueError(f"rate limit factor must be >= 0, not {mode!r}")
    return factor


# ---------------------------------------------------------------------------------------------
# Routing


_Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True)
class _Route:
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


def _route(method: str, template: str, handler: str, *, auth: bool = True) -> _Route:
    """An ``/api/`` route; ``{name}`` in ``template`` captures one path segment."""
    return _make_route(method, template, handler, auth=auth, counted=True, gated=True)


def _make_route(
    method: str, template: str, handler: str, *, auth: bool, counted: bool, gated: bool
) -> _Route:
    parts = re.split(r"\{(\w+)\}", template.rstrip("/"))
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return _Route(
        method, re.compile(regex + "/"), f"{method} {template}", handler, auth, counted, gated
    )


def _control(method: str, template: str, handler: str, *, counted: bool = False) -> _Route:
    """A simulator route: never authenticated, never failed or rate limited."""
    return _make_route(method, template, handler, auth=False, counted=counted, gated=False)


_ROUTES: list[_Route] = [
    _route("POST", "/api/v0/bundles/", "_search", auth=False),
    _route("GET", "/api/v0/bundles/", "_search", auth=False),
    _route("PUT", "/api/v0/search/asks/", "_search", auth=False),
    _route("PUT", "/api/v0/asks/{id}/", "_create"),
    _route("GET", "/api/v1/instances/", "_list"),
    _route("GET", "/api/v0/instances/", "_legacy_list"),
    _route("PUT", "/api/v0/instances/request_logs/{id}/", "_request_logs"),
    _route("GET", "/api/v0/instances/{id}/", "_show"),
    _route("PUT", "/api/v0/instances/{id}/", "_modify"),
    _route("DELETE", "/api/v0/instances/{id}/", "_destroy"),
    _route("GET", "/api/v0/users/current/", "_current_user"),
    _route("GET", "/api/v0/gpu_names/unique/", "_gpu_names", auth=False),
    _control("GET", "/_sim/logs/{token}.log", "_fetch_logs", counted=True),
    _control("GET", "/_sim/ledger", "_get_ledger"),
    _control("GET", "/_sim/stats", "_get_stats"),
    _control("GET", "/_sim/faults", "_get_faults"),
    _control("POST", "/_sim/faults", "_post_faults"),
]


def _error(status: int, error: str, msg: str, **extra: Any) -> Response:
    return Response.json({"success": False, "error": error, "msg": msg, **extra}, status)


def _rate_limited(threshold: float) -> Response:
    return _error(
        429, "rate_limit_exceeded", f"API requests too frequent endpoint threshold={threshold}"
    )


def _no_such_instance(instance_id: int) -> Response:
    return _error(404, "no_such_instance", f"Instance {instance_id} not found.")


def _int_param(params: Mapping[str, str]) -> int | None:
    """The ``{id}`` path segment as an int, or None when it is not one (a 400 for the API)."""
    try:
        return int(params["id"])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The simulator


class VastSim:
    """An in-memory Vast.ai account and marketplace behind an HTTP server.

    Start it with ``await nursery.start(sim.serve)``; ``sim.url`` is then the base URL to give
    a client (``VAST_URL`` for the CLI). All state lives on the object, so a test can inspect
    and steer it directly while clients talk HTTP.
    """

    def __init__(self, config: VastSimConfig | None = None) -> None:
        self.config = config or VastSimConfig()
        self.faults: Faults = self.config.faults
        """The faults in force; change them with ``set_faults``."""
        self.url: str | None = None
        """The base URL, set once ``serve`` is listening."""
        market_rng = random.Random(self.config.seed)
        self._rng = random.Random(f"{self.config.seed}:runtime")
        self._fault_rng = random.Random(f"{self.config.seed}:faults")
        self._next_offer_id = market.IdSequence(market_rng, 20_000_000)
        self._next_instance_id = market.IdSequence(self._rng, 30_000_000)
        self._limiter = _RateLimiter(rate_factor(self.config.rate_limits))
        self._offers: dict[int, Row] = {}
        self._instances: dict[int, _Instance] = {}
        self._walks: dict[tuple[str, str], _Walk] = {}
        """Paged listings under way, by (filters, order): see ``_list``."""
        self._logs: dict[str, _LogUpload] = {}
        self._stats: Counter[str] = Counter()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.unhealthy_apps: set[int] = set()
        """Instances whose app answers 500 (the ``app_unhealthy`` fault)."""
        """``serve``'s nursery: the instances' app ports are served in it."""
        if self.config.offers_path:
            rows = [
                market.list_offer(
                    row,
                    int(row.get("id") or self._next_offer_id()),
                    start_date=float(row.get("start_date") or 0.0),
                )
                for row in market.load_rows(self.config.offers_path)
            ]
        else:
            rows = market.seeded_offers(market.packaged_rows(), market_rng, self._next_offer_id)
        self._offers = {row["id"]: row for row in rows}
        self._template = dict(min(rows, key=lambda r: r["id"])) if rows else {}

    # -- serving ---------------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the API on ``host:port`` until cancelled; reports the base URL once bound."""
        async with trio.open_nursery() as nursery:
            url: str = await nursery.start(
                functools.partial(serve_http, self.handle, host=host, port=port)
            )
            self.url = url
            self._nursery = nursery
            logger.info(
                "vast sim listening", url=url, offers=len(self._offers), seed=self.config.seed
            )
            task_status.started(url)

    async def handle(self, request: Request) -> Response:
        """Answer one HTTP request (the ``serve_http`` handler)."""
        path = "/" + request.path.strip("/") + "/"
        found = self._match(request.method, path)
        if found is None:
            return _error(404, "not_found", f"{request.method} {request.path} not found")
        route, params = found
        handler: _Handler = getattr(self, route.handler)
        gate = await self._gate(route, request) if route.gated else None
        response = gate or await handler(request, params)
        if route.counted:
            self._stats[route.endpoint] += 1
            if response.status >= 400:
                self._stats[f"{route.endpoint} {response.status}"] += 1
        return response

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in _ROUTES:
            match = route.pattern.fullmatch(path)
            if match and route.method == method:
                return route, match.groupdict()
        return None

    async def _gate(self, route: _Route, request: Request) -> Response | None:
        """Latency, injected failures, auth and rate limits, in that order; None lets it pass."""
        if self.faults.latency > 0:
            await trio.sleep(self.faults.latency)
        if self._draw(self.faults.rate_5xx):
            status = self._fault_rng.choice((500, 502, 503))
            return Response.text(f"{status} simulated server error", status)
        if self._draw(self.faults.rate_429):
            return _rate_limited(RATE_LIMITS.get(route.endpoint, 1.0))
        key = self._api_key(request)
        if route.auth and not self._key_ok(key):
            return _error(401, "auth_error", "Invalid user key")
        threshold = self._limiter.check(route.endpoint, key or "anonymous", trio.current_time())
        return None if threshold is None else _rate_limited(threshold)

    def _draw(self, rate: float) -> bool:
        return rate > 0 and self._fault_rng.random() < rate

    @staticmethod
    def _api_key(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return request.param("api_key") or None

    def _key_ok(self, key: str | None) -> bool:
        return bool(key) and (self.config.api_key is None or key == self.config.api_key)

    # -- offers ----------------------------------------------------------------------------

    async def _search(self, request: Request, params: dict[str, str]) -> Response:
        try:
            body = self._search_body(request)
            query = market.parse_offer_query(body)
        except (msgspec.DecodeError, market.QueryError) as exc:
            return _error(400, "invalid_request", str(exc))
        offers = market.search(self._offers.values(), query, now=_wall())
        return Response.json({"offers": offers})

    @staticmethod
    def _search_body(request: Request) -> Any:
        if request.method == "GET":
            q = request.param("q")
            return msgspec.json.decode(q) if q else {}
        body = request.json()
        if request.method == "PUT" and isinstance(body, dict):
            return body.get("q", {})
        return body if body is not None else {}

    def _take_offer(self, offer_id: int) -> Row | None:
        """The offer, removed from the market; None when it is gone or a fault says so."""
        offer = self._offers.pop(offer_id, None)
        if offer is not None and self._draw(self.faults.offer_taken):
            logger.info("vast sim: offer taken by someone else", offer_id=offer_id)
            self._notify()
            return None
        return offer

    async def _create(self, request: Request, params: dict[str, str]) -> Response:
        offer_id = _int_param(params)
        body = _json_object(request)
        if offer_id is None or body is None:
            return _error(
                400,
                "invalid_args",
                "Invalid args: 'id' is required and must be a valid offer ID",
                ask_id=params["id"],
            )
        problem = _create_problem(body, self._offers.get(offer_id))
        if problem:
            return _error(400, problem[0], problem[1], ask_id=offer_id)
        offer = self._take_offer(offer_id)
        if offer is None:
            return _error(
                404,
                "no_such_ask",
                f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available.",
                ask_id=offer_id,
            )
        instance = self._new_instance(offer, body)
        if self._draw(self.faults.lose_create_response):
            logger.info("vast sim: losing the create response", instance_id=instance.id)
            return Response.text("502 Bad Gateway", 502)
        return Response.json(
            {"success": True, "new_contract": instance.id, "instance_api_key": instance.api_key}
        )

    def _new_instance(self, offer: Row, body: Row) -> _Instance:
        now = trio.current_time()
        price = body.get("price")
        gpu = float(price) if price is not None else float(offer["dph_base"])
        disk = float(body.get("disk") or 10.0)
        specs = _port_specs(body.get("env") or {})
        first = self._rng.randrange(20_000, 60_000)
        ports = {
            spec: [{"HostIp": "0.0.0.0", "HostPort": str(first + i)}]
            for i, spec in enumerate(specs)
        }
        public_ipaddr = str(offer["public_ipaddr"]) + self._rng.choice(("", "", " ", "\n"))
        app = _AppPorts(specs) if self.config.serve_ports else None
        if app is not None:
            public_ipaddr = "127.0.0.1" + public_ipaddr[len(str(offer["public_ipaddr"])) :]
            ports.update(app.bindings())
        instance = _Instance(
            id=self._next_instance_id(),
            offer=offer,
            body=body,
            label=body.get("label"),
            created_at=now,
            start_date=_wall(),
            dph_total=gpu + float(offer["storage_cost"]) * disk / market.HOURS_PER_MONTH,
            is_bid=price is not None,
            ports=ports,
            direct_ports=(first, first + len(specs) - 1),
            public_ipaddr=public_ipaddr,
            api_key=f"{self._rng.getrandbits(256):064x}",
            boot_from=now,
            intended_status=str(body.get("target_state") or "running"),
        )
        self._decide_fate(instance)
        self._instances[instance.id] = instance
        if app is not None:
            self._serve_app(instance, app)
        logger.info(
            "vast sim: instance created",
            instance_id=instance.id,
            offer_id=offer["id"],
            label=instance.label,
            gpu=offer.get("gpu_name"),
        )
        self._notify()
        return instance

    def _decide_fate(self, instance: _Instance) -> None:
        """Draw the instance-level faults once, at birth, so its story is reproducible."""
        instance.stuck_loading = self._draw(self.faults.stuck_loading)
        instance.oci_failure = self._draw(self.faults.oci_failure)
        boot = self.config.boot_seconds
        trouble_at = instance.created_at + boot + boot * self._fault_rng.uniform(1.0, 3.0)
        if self._draw(self.faults.host_offline):
            instance.offline_at = trouble_at
        if self._draw(self.faults.instance_exit):
            instance.exit_at = trouble_at

    # -- instances -------------------------------------------------------------------------

    def _live(self, instance_id: int | None) -> _Instance | None:
        instance = self._instances.get(instance_id) if instance_id is not None else None
        return instance if instance is not None and instance.destroyed_at is None else None

    async def _list(self, request: Request, params: dict[str, str]) -> Response:
        try:
            filters = _json_param(request, "select_filters", {})
            order = _order_by(_json_param(request, "order_by", []))
            limit = _page_limit(request.param("limit"))
            select = _json_param(request, "select_cols", ["*"])
        except ValueError as exc:
            return _error(400, "invalid_args", str(exc))
        if not isinstance(filters, dict):
            return _error(400, "invalid_args", "select_filters must be an object")
        # Filter and sort on a few cheap columns and render only the rows of the page (and
        # those a filter or order on another column needs): rendering every instance for
        # every page made a sweep of N instances cost N²/25 renders, and the simulator, not
        # the node, was what a thousand pods waited for. The pages after the first follow
        # the rows the first one found (a walk, for ``WALK_SECONDS``), rendered as they are
        # now; filtering all N again for each page made a sweep of 5,000 cost a million.
        now = trio.current_time()
        walk_key = (request.param("select_filters") or "", request.param("order_by") or "")
        walk = self._walks.get(walk_key) if request.param("after_token") else None
        rendered: dict[int, Row] = {}

        def full(row: Row) -> Row:
            instance_id = int(row["id"])
            if instance_id not in rendered:
                rendered[instance_id] = self._render(self._instances[instance_id])
            return rendered[instance_id]

        def column(row: Row, field: str) -> tuple[bool, Any]:
            if field in row:
                return True, row[field]
            return market.stored_column(full(row), field)

        if walk is None or now - walk.at > WALK_SECONDS:
            rows = [
                row
                for row in (self._skeleton(i, now) for i in self._instances.values())
                if row and market.matches(row, filters, column)
            ]
            rows = market.sort_rows(rows, order, column)
            labels = dict(Counter(row.get("label") or "" for row in rows))
            walk = self._walks[walk_key] = _Walk(now, rows, labels)
            while len(self._walks) > WALKS_KEPT:
                del self._walks[next(iter(self._walks))]
        try:
            page, next_token = _page(walk.rows, order, request.param("after_token"), limit, column)
        except ValueError:
            return _error(400, "invalid_token", "Invalid after_token")
        page = [row for row in page if self._instances[int(row["id"])].destroyed_at is None]
        return Response.json(
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": len(walk.rows),
                "label_counts": walk.labels,
                "next_token": next_token,
                "instances": [_project(full(row), select) for row in page],
            }
        )

    def _skeleton(self, instance: _Instance, now: float) -> Row:
        """The columns lists filter and sort on most, cheaply; {} for a destroyed one."""
        if instance.destroyed_at is not None:
            return {}
        return {
            "id": instance.id,
            "label": instance.label,
            "actual_status": instance.phase(now, self.config.boot_seconds)[0],
            "intended_status": instance.intended_status,
            "gpu_name": instance.offer.get("gpu_name"),
        }

    async def _legacy_list(self, request: Request, params: dict[str, str]) -> Response:
        return _error(
            410,
            "deprecated",
            "Endpoint deprecated: /api/v0/instances/ is deprecated. "
            "Use /api/v1/instances/ instead.",
        )

    async def _show(self, request: Request, params: dict[str, str]) -> Response:
        instance_id = _int_param(params)
        if instance_id is None:
            return _error(400, "invalid_args", "invalid instance_id")
        instance = self._live(instance_id)
        return Response.json({"instances": self._render(instance) if instance else None})

    async def _modify(self, request: Request, params: dict[str, str]) -> Response:
        instance = self._live(_int_param(params))
        body = _json_object(request)
        if instance is None:
            return _no_such_instance(_int_param(params) or 0)
        if not body or not ({"label", "state"} & body.keys()):
            return _error(400, "invalid_args", "label or state is required")
        if "state" in body and body["state"] not in ("running", "stopped"):
            return Response.json({"success": False, "msg": "Invalid target state"}, 400)
        if len(str(body.get("label") or "")) > 1024:
            return _error(400, "invalid_args", "label_too_long")
        if "state" in body:
            self._set_state(instance, str(body["state"]))
        if "label" in body:
            instance.label = body["label"]
        self._notify()
        return Response.json({"success": True})

    def _set_state(self, instance: _Instance, state: str) -> None:
        """Stop, or start again: a start boots anew, clearing an exit (a host stays offline)."""
        if state == "running" and instance.intended_status != "running":
            instance.boot_from = trio.current_time()
        if state == "running":
            instance.exit_at = None
        instance.intended_status = state

    async def _destroy(self, request: Request, params: dict[str, str]) -> Response:
        instance_id = _int_param(params)
        instance = self._live(instance_id)
        if instance is None:
            return _no_such_instance(instance_id or 0)
        self._destroy_instance(instance)
        return Response.json({"success": True})

    def _destroy_instance(self, instance: _Instance) -> None:
        """Stop billing and put the machine back on the market under a fresh offer id."""
        instance.destroyed_at = trio.current_time()
        relisted = market.list_offer(
            instance.offer,
            self._next_offer_id(),
            start_date=instance.offer.get("start_date") or 0.0,
        )
        self._offers[relisted["id"]] = relisted
        logger.info(
            "vast sim: instance destroyed",
            instance_id=instance.id,
            cost=round(instance.cost(instance.destroyed_at), 6),
        )
        self._notify()

    # -- logs ------------------------------------------------------------------------------

    async def _request_logs(self, request: Request, params: dict[str, str]) -> Response:
        instance = self._live(_int_param(params))
        if instance is None:
            return _error(404, "invalid_id", "Invalid instance id.")
        body = _json_object(request) or {}
        lines = self._log_lines(instance, daemon=str(body.get("daemon_logs")).lower() == "true")
        if body.get("filter"):
            lines = [line for line in lines if str(body["filter"]) in line]
        tail = body.get("tail")
        if tail is not None and str(tail).isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        token = f"{self._rng.getrandbits(128):032x}"
        upload = _LogUpload("".join(line + "\n" for line in lines))
        if self._draw(self.config.faults.logs_missing):
            upload.polls_needed = math.inf
        elif self._draw(self.config.faults.logs_slow):
            upload.polls_needed = LOG_POLLS_WHEN_SLOW
        self._logs[token] = upload
        return Response.json(
            {
                "success": True,
                "result_url": f"{self.url}/_sim/logs/{token}.log",
                "msg": "Logs will be uploaded to the result_url shortly.",
            }
        )

    def _log_lines(self, instance: _Instance, *, daemon: bool) -> list[str]:
        """Plausible logs for the instance's current phase: the image pull, then the command."""
        status, message = instance.phase(trio.current_time(), self.config.boot_seconds)
        if daemon:
            return [
                f"vast daemon: contract {instance.id} image {instance.image}",
                f"vast daemon: status {status}: {message}",
            ]
        layers = [_digest(instance.id, "layer", i)[:12] for i in range(3)]
        lines = [f"Pulling image {instance.image}"]
        lines += [f"{layer}: Pull complete" for layer in layers]
        lines += [
            f"Digest: sha256:{_digest(instance.image)}",
            f"Status: Downloaded newer image for {instance.image}",
        ]
        if status == "created" and instance.oci_failure:
            return [*lines, f"docker: {message}"]
        if status not in ("running", "exited", "offline", "stopped"):
            return lines
        command = " ".join(
            [str(instance.body.get("onstart") or ""), *map(str, instance.body.get("args") or [])]
        ).strip()
        lines += [
            f"Starting container ({instance.runtype})",
            f"+ {command or 'ssh'}",
            f"[{instance.label or instance.id}] service started",
        ]
        lines += self._progress_lines(instance)
        if status == "exited":
            lines.append(f"process exited with code {instance.exit_code}")
        return lines

    def _progress_lines(self, instance: _Instance) -> list[str]:
        """A line per ``log_interval`` seconds of run time: logs grow while it runs, and the
        same instance at the same moment always has the same lines."""
        running_since = instance.boot_from + self.config.boot_seconds
        ends = [t for t in (instance.exit_at, instance.offline_at) if t is not None]
        until = min([trio.current_time(), *ends])
        count = int(max(0.0, until - running_since) // self.config.log_interval)
        name = instance.label or instance.id
        return [
            f"[{name}] {instance.image}: step {n} done, {n * 12} samples/s"
            for n in range(1, count + 1)
        ]

    async def _fetch_logs(self, request: Request, params: dict[str, str]) -> Response:
        upload = self._logs.get(params["token"])
        if upload is None or upload.polls < upload.polls_needed:
            if upload is not None:
                upload.polls += 1
            return Response.text("<Error><Code>NoSuchKey</Code></Error>", 404)
        return Response.text(upload.text)

    # -- account ---------------------------------------------------------------------------

    async def _current_user(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(
            {
                "id": 4242,
                "username": "sim",
                "email": "sim@example.invalid",
                "fullname": "Vast Sim",
                "credit": 100.0,
                "balance": 0.0,
                "has_billing": True,
                "ssh_key": None,
                "host_agreement_accepted": False,
                "can_pay": True,
            }
        )

    async def _gpu_names(self, request: Request, params: dict[str, str]) -> Response:
        names = sorted({str(row.get("gpu_name")) for row in self._offers.values()})
        return Response.json({"gpu_names": names})

    # -- control endpoints -----------------------------------------------------------------

    async def _get_ledger(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.ledger())

    async def _get_stats(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.stats())

    async def _get_faults(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.faults)

    async def _post_faults(self, request: Request, params: dict[str, str]) -> Response:
        body = _json_object(request)
        try:
            self.set_faults(**(body or {}))
        except (TypeError, msgspec.ValidationError) as exc:
            return _error(400, "invalid_args", str(exc))
        return Response.json(self.faults)

    # -- rendering -------------------------------------------------------------------------

    def _render(self, instance: _Instance) -> Row:
        """The instance as the API shows it (``vast-api.md`` §5.1, §8.2)."""
        now = trio.current_time()
        status, message = instance.phase(now, self.config.boot_seconds)
        offer, body = instance.offer, instance.body
        row = {k: offer.get(k) for k in _COPIED_FROM_OFFER}
        disk_hour = float(offer["storage_cost"]) * float(body.get("disk") or 10.0) / 720.0
        row.update(
            id=instance.id,
            actual_status=status,
            intended_status=instance.intended_status,
            cur_state="stopped" if instance.intended_status == "stopped" else "running",
            next_state=instance.intended_status,
            status_msg=message,
            label=instance.label,
            image_uuid=instance.image,
            image_args=list(body.get("args") or []),
            image_runtype=instance.runtype,
            extra_env=[[str(k), str(v)] for k, v in (body.get("env") or {}).items()],
            onstart=body.get("onstart"),
            template_id=None,
            template_hash_id=body.get("template_hash_id"),
            template_name=None,
            public_ipaddr=instance.public_ipaddr,
            local_ipaddrs="192.168.1.20 172.17.0.1 \n",
            ports=instance.ports if status == "running" else None,
            direct_port_start=instance.direct_ports[0],
            direct_port_end=instance.direct_ports[1],
            ssh_host=f"ssh{instance.id % 9 + 1}.vast.ai",
            ssh_port=10_000 + instance.id % 50_000,
            ssh_idx=str(instance.id % 9 + 1),
            machine_dir_ssh_port=instance.direct_ports[0] - 1,
            jupyter_token=_digest(instance.api_key, "jupyter"),
            dph_total=instance.dph_total,
            storage_total_cost=disk_hour,
            is_bid=instance.is_bid,
            disk_space=float(body.get("disk") or 10.0),
            gpu_totalram=offer.get("gpu_total_ram"),
            **self._usage(instance, running=status == "running"),
            start_date=instance.start_date,
            end_date=instance.start_date + float(offer.get("duration") or 0.0),
            duration=max(0.0, now - instance.created_at),
            uptime_mins=round(max(0.0, now - instance.boot_from) / 60.0, 2),
            time_remaining="",
            time_remaining_isbid="",
            volume_info=[],
        )
        return row

    @staticmethod
    def _usage(instance: _Instance, *, running: bool) -> Row:
        """Live metrics of a running instance, steady per instance (from its id): what
        ``kubectl top`` shows through the kubelet API. Units as the API's: utilisations are
        fractions (GPU: percent), memory and disk in GB."""
        if not running:
            return dict.fromkeys(
                ("gpu_util", "cpu_util", "mem_usage", "mem_limit", "vmem_usage", "disk_usage")
            )
        spread = int(_digest(instance.id, "usage")[:4], 16) / 0xFFFF
        gpu_ram_gb = float(instance.offer.get("gpu_ram") or 0.0) / 1024.0
        return {
            "gpu_util": round(40.0 + 55.0 * spread, 1),
            "cpu_util": round(0.1 + 0.5 * spread, 3),
            "mem_usage": round(2.0 + 6.0 * spread, 2),
            "mem_limit": float(instance.offer.get("cpu_ram") or 0.0) / 1024.0 or None,
            "vmem_usage": round(gpu_ram_gb * (0.5 + 0.4 * spread), 2),
            "disk_usage": round(1.0 + 4.0 * spread, 2),
        }

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _next_transition(self, *, after: float) -> float:
        """The earliest instant after ``after`` at which some instance's status changes."""
        now = after
        boot = self.config.boot_seconds
        return min(
            (i.next_change(now, boot) for i in self._instances.values() if i.destroyed_at is None),
            default=math.inf,
        )

    # -- the instances' apps (``serve_ports``) -------------------------------------------

    def _serve_app(self, instance: _Instance, app: _AppPorts) -> None:
        if self._nursery is None:
            app.close()
            raise RuntimeError("serve_ports needs the simulator served (await nursery.start)")
        self._nursery.start_soon(self._run_app, instance, app, name=f"app of {instance.id}")

    def _app_up(self, instance: _Instance) -> bool:
        status, _ = instance.phase(trio.current_time(), self.config.boot_seconds)
        return instance.destroyed_at is None and status == "running"

    async def _run_app(self, instance: _Instance, app: _AppPorts) -> None:
        """Listen on the instance's ports while it runs; refuse connections otherwise.

        Owns the ports' sockets: bound (so nothing else takes the port) from creation,
        listening only while ``running``, closed for good once the instance is destroyed.
        """
        handler = functools.partial(self._app_answer, instance)
        try:
            while True:
                await self.wait_until(
                    lambda _: instance.destroyed_at is not None or self._app_up(instance)
                )
                if instance.destroyed_at is not None:
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(app.serve, handler)
                    await self.wait_until(lambda _: not self._app_up(instance))
                    nursery.cancel_scope.cancel()
                app.rebind()  # stopped or exited: refused until it runs again
        finally:
            app.close()

    async def _app_answer(self, instance: _Instance, request: Request) -> Response:
        if instance.id in self.unhealthy_apps:
            return Response.text("simulated app failure", 500)
        running_since = instance.boot_from + self.config.boot_seconds
        if trio.current_time() - running_since < self.config.app_ready_after:
            return Response.text("loading", 503)
        return Response.text("ok")

    # -- Python API for tests --------------------------------------------------------------

    @property
    def created(self) -> int:
        """How many instances were ever created."""
        return len(self._instances)

    @property
    def destroyed(self) -> int:
        """How many instances were destroyed."""
        return sum(1 for i in self._instances.values() if i.destroyed_at is not None)

    def offers(self) -> list[Row]:
        """The offers on the market now (unpriced rows; searches price them per query)."""
        return [dict(row) for row in self._offers.values()]

    def add_offers(self, offers: Iterable[Mapping[str, Any]]) -> list[int]:
        """List new offers and return their ids.

        Each offer may be partial (``{"gpu_name": "RTX 3060", "dph_total": 0.12,
        "geolocation": "Texas, US"}``); missing fields come from a real offer. An ``id`` is
        kept when given, otherwise one is assigned.
        """
        ids = []
        for partial in offers:
            offer_id = int(partial.get("id") or self._next_offer_id())
            row = market.complete_offer(partial, self._template, offer_id)
            self._offers[offer_id] = row
            ids.append(offer_id)
        self._notify()
        return ids

    def remove_offers(self, predicate: Callable[[Row], bool] | None = None) -> int:
        """Delist every offer ``predicate`` accepts (all of them when None); returns the count."""
        gone = [oid for oid, row in self._offers.items() if predicate is None or predicate(row)]
        for offer_id in gone:
            del self._offers[offer_id]
        self._notify()
        return len(gone)

    def live_instances(self) -> list[Row]:
        """Every instance not destroyed, rendered as the API shows it, in id order."""
        return [
            self._render(i) for _, i in sorted(self._instances.items()) if i.destroyed_at is None
        ]

    def instance(self, instance_id: int) -> Row | None:
        """One live instance as the API shows it, or None."""
        instance = self._live(instance_id)
        return self._render(instance) if instance else None

    def ledger(self) -> list[Row]:
        """Every instance ever created, with trio-clock ``created_at``/``destroyed_at``, the
        wall-clock ``start_date`` (epoch seconds, as the API shows it) and the cost in
        dollars (``dph_total`` times the hours between them, or until now while live)."""
        now = trio.current_time()
        return [
            {
                "id": i.id,
                "label": i.label,
                "offer_id": i.offer["id"],
                "gpu_name": i.offer.get("gpu_name"),
                "dph_total": i.dph_total,
                "created_at": i.created_at,
                "destroyed_at": i.destroyed_at,
                "start_date": i.start_date,
                "cost": i.cost(now),
            }
            for _, i in sorted(self._instances.items())
        ]

    def stats(self) -> dict[str, int]:
        """API calls by endpoint (``"PUT /api/v0/asks/{id}/": 2``), plus one key per endpoint
        and error status (``"PUT /api/v0/asks/{id}/ 429": 1``)."""
        return dict(self._stats)

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault rates (others keep their value); returns the faults now in force.

        ``app_unhealthy=<instance id>`` makes that instance's app answer 500 from now on
        (``serve_ports``); it is per instance, so it is kept in ``unhealthy_apps``.

        Instance-level rates apply to instances created from now on.
        """
        unhealthy = changes.pop("app_unhealthy", None)
        if unhealthy is not None:
            self.unhealthy_apps.add(int(unhealthy))
        merged = {**msgspec.structs.asdict(self.faults), **changes}
        self.faults = msgspec.convert(merged, Faults)
        logger.info("vast sim: faults set", **msgspec.structs.asdict(self.faults))
        return self.faults

    def exit_instance(self, instance_id: int, *, code: int = 0) -> None:
        """Make the container exit now with ``code`` (``actual_status`` becomes ``exited``)."""
        instance = self._require(instance_id)
        instance.exit_at = trio.current_time()
        instance.exit_code = code
        self._notify()

    def set_offline(self, instance_id: int) -> None:
        """Take the instance's host offline now (``actual_status`` becomes ``offline``)."""
        self._require(instance_id).offline_at = trio.current_time()
        self._notify()

    def set_stuck_loading(self, instance_id: int) -> None:
        """Keep the instance in ``loading`` forever."""
        self._require(instance_id).stuck_loading = True
        self._notify()

    def set_oci_failure(self, instance_id: int) -> None:
        """Fail the instance's container creation (``created`` + "OCI runtime create failed")."""
        self._require(instance_id).oci_failure = True
        self._notify()

    async def wait_until(self, predicate: Callable[[VastSim], bool]) -> None:
        """Return once ``predicate(sim)`` holds (wrap it in ``trio.fail_after`` to bound it).

        Re-checks on every state change and at every instant an instance's status changes on
        its own (boot steps, scheduled faults), so nothing polls.
        """
        while True:
            # Transitions are looked for after the moment of the check, not after "now": a
            # status change between the two would otherwise be skipped and never waited for.
            checked_at = trio.current_time()
            if predicate(self):
                return
            changed = self._changed
            with trio.move_on_at(self._next_transition(after=checked_at)):
                await changed.wait()

    def _require(self, instance_id: int) -> _Instance:
        instance = self._live(instance_id)
        if instance is None:
            raise KeyError(f"no live instance {instance_id}")
        return instance


_COPIED_FROM_OFFER = tuple(
    """machine_id host_id bundle_id num_gpus gpu_name gpu_ram gpu_frac gpu_arch gpu_lanes
    gpu_mem_bw compute_cap cuda_max_good driver_version cpu_name cpu_arch cpu_cores
    cpu_cores_effective cpu_ram disk_name disk_bw inet_up inet_down inet_up_cost inet_down_cost
    dph_base storage_cost min_bid geolocation reliability2 verification rentable static_ip
    external hosting_type mobo_name os_version pci_gen pcie_bw dlperf total_flops bw_nvlink
    has_avx direct_port_count""".split()  # noqa: SIM905 (a word list reads better)
)
"""Instance columns that describe the machine, taken from the offer bought."""


def _create_problem(body: Row, offer: Row | None) -> tuple[str, str] | None:
    """``(error, msg)`` for a create body the API refuses with 400, else None."""
    if not body.get("image") and not body.get("template_hash_id"):
        return "invalid_args", "Invalid args: image is required"
    if not isinstance(body.get("env") or {}, dict):
        return "invalid_args", "env must be a JSON object, not a Docker flag string"
    price = body.get("price")
    if price is not None:
        if not isinstance(price, int | float) or price <= 0:
            return "invalid_price", f"Invalid bid price {price!r}"
        if offer is not None and price < float(offer["min_bid"]):
            return "invalid_price", f"Bid price {price} is below the minimum bid {offer['min_bid']}"
    return None


def _wall() -> float:
    """Epoch seconds for the API's date fields (never used for durations)."""
    return time.time()


def _json_object(request: Request) -> Row | None:
    try:
        body = request.json()
    except msgspec.DecodeError:
        return None
    if body is None:
        return {}
    return body if isinstance(body, dict) else None


def _json_param(request: Request, name: str, default: Any) -> Any:
    raw = request.param(name)
    if not raw:
        return default
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ValueError(f"{name} is not valid JSON") from None


def _order_by(order: Any) -> list[tuple[str, bool]]:
    """``[{"col":"id","dir":"asc"}]`` as ``(column, descending)`` pairs, ``id`` appended last."""
    if not isinstance(order, list):
        raise ValueError("order_by must be a list")
    pairs = [
        (str(item["col"]), str(item.get("dir", "asc")).lower() == "desc")
        for item in order
        if isinstance(item, dict) and "col" in item
    ] or market.parse_order([i for i in order if not isinstance(i, dict)])
    if all(col != "id" for col, _ in pairs):
        pairs.append(("id", False))
    return pairs


@dataclass
class _Walk:
    """The rows a paged listing's first page found (filtered and sorted), and when."""

    at: float
    rows: list[Row]
    labels: dict[str, int]


def _page_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return PAGE_SIZE
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError("limit must be an integer") from None
    return 5 if limit <= 0 else min(limit, PAGE_SIZE)


def _page(
    rows: list[Row],
    order: list[tuple[str, bool]],
    token: str | None,
    limit: int,
    resolve: market.Resolver = market.stored_column,
) -> tuple[list[Row], str | None]:
    """One page of sorted ``rows`` after ``token``, and the token for the next page (or None).

    The token is the last row's sort key (a keyset cursor, as the real one is documented to
    be), so pages stay consistent while instances come and go between calls. Raises
    ``ValueError`` for a token that is not one of ours.
    """
    descending = [desc for _, desc in order]

    def key(row: Row) -> list[Any]:
        return [resolve(row, col)[1] for col, _ in order]

    start = 0
    if token:
        after = _decode_token(token, len(order))
        if after is None:
            raise ValueError(token)
        # ``rows`` are sorted by ``order``: the first row past the cursor, by bisection.
        low, high = 0, len(rows)
        while low < high:
            middle = (low + high) // 2
            if market.compare_keys(key(rows[middle]), after, descending) > 0:
                high = middle
            else:
                low = middle + 1
        start = low
    page = rows[start : start + limit]
    return page, _encode_token(key(page[-1])) if len(rows) > start + limit else None


def _encode_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def _decode_token(token: str, width: int) -> list[Any] | None:
    try:
        key = msgspec.json.decode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, msgspec.DecodeError):
        return None
    return key if isinstance(key, list) and len(key) == width else None


def _project(row: Row, select: Any) -> Row:
    """``select_cols``: the named columns only (unknown ones null), everything for ``*``."""
    if not isinstance(select, list) or "*" in select:
        return row
    return {str(col): row.get(str(col)) for col in select}


# ---------------------------------------------------------------------------------------------
# Command line: ``vk-trio sim vast``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``vk-trio sim vast``."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks one (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="marketplace and fault seed")
    parser.add_argument(
        "--boot-seconds",
        type=float,
        default=3.0,
        help="seconds from create to running (default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=None, help="the only API key accepted (default: any non-empty key)"
    )
    parser.add_argument(
        "--rate-limits",
        default="real",
        metavar="real|off|FACTOR",
        help="real intervals, none, or the real ones times FACTOR",
    )
    parser.add_argument(
        "--offers",
        default=None,
        metavar="PATH",
        help="JSON list of offers to serve instead of the seeded market",
    )
    parser.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help='initial faults, e.g. \'{"rate_429": 0.1, "oci_failure": 0.05}\'',
    )
    parser.add_argument(
        "--serve-ports",
        action="store_true",
        help="answer HTTP on each running instance's mapped ports, at 127.0.0.1",
    )
    parser.add_argument(
        "--app-ready-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --serve-ports: answer 503 for this long after running, then 200",
    )
    parser.add_argument("--log-level", default="INFO", help="loguru level (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> VastSimConfig:
    """The ``VastSimConfig`` the flags describe (raises ``ValueError`` on bad values)."""
    rate_factor(args.rate_limits)
    faults = msgspec.json.decode(args.faults, type=Faults) if args.faults else Faults()
    return VastSimConfig(
        seed=args.seed,
        boot_seconds=args.boot_seconds,
        api_key=args.api_key,
        rate_limits=args.rate_limits,
        offers_path=args.offers,
        faults=faults,
        serve_ports=args.serve_ports,
        app_ready_after=args.app_ready_after,
    )


def main(args: argparse.Namespace) -> int:
    """Run the simulator until interrupted; prints its URL on stdout once listening."""
    from vk_trio.logs import configure_logging

    configure_logging(args.log_level)
    host, _, port = args.listen.rpartition(":")
    try:
        sim = VastSim(config_from_args(args))
    except (ValueError, msgspec.ValidationError, OSError) as exc:
        logger.error("vast sim: bad configuration", error=str(exc))
        return 2
    trio.run(_serve_and_announce, sim, host or "127.0.0.1", int(port or 0))
    return 0


async def _serve_and_announce(sim: VastSim, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(sim.serve, host=host, port=port))
        print(url, flush=True)
