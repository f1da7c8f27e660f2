"""A simulated Vast.ai API: marketplace, instances, rate limits, faults and a ledger.

It serves the subset of ``vast-api.md`` that vk-trio and the real ``vastai`` CLI use, with the
real API's quirks kept on purpose (numbers sent as strings in queries, ``public_ipaddr`` with
trailing whitespace, ``HostPort`` as a string, ``{"instances": null}`` for a missing instance,
410 on the legacy list), so that a client which passes against the simulator has already met
them.

Time: instance status is computed lazily from ``trio.current_time()`` (null → created → loading
→ running over ``boot_seconds``), so tests can use trio's ``MockClock`` and nothing runs in the
background. Rate limits use the same clock. Wall time appears only in the API's epoch fields.
The exceptions are opt-in: ``serve_ports`` serves each instance's ports, and ``run_containers``
runs each instance's process for real in a sandbox (``containers``), on the same clock.

Determinism: every id, price, port, key and fault decision comes from RNGs seeded by
``VastSimConfig.seed``; the same seed and the same request sequence give the same answers.

Control surface for tests (never authenticated): ``GET /_sim/ledger``, ``GET /_sim/stats``,
``GET /_sim/create-requests``, ``GET|POST /_sim/faults`` and the ``VastSim`` methods documented
below. Instance logs are served from ``/_sim/logs/<token>.log`` without auth, the way the real
API hands out S3 URLs.
"""

from __future__ import annotations

import functools

import trio
from loguru import logger

from vk_trio.devtools.sim.vast.agent import AGENT_PATH, agent_bytes
from vk_trio.devtools.sim.vast.config import RATE_LIMITS
from vk_trio.devtools.sim.vast.control import ControlSurface
from vk_trio.devtools.sim.vast.logs import LogRoutes
from vk_trio.devtools.sim.vast.routes import (
    ROUTES,
    Route,
    RouteHandler,
    error_response,
    rate_limited,
)
from vk_trio.http_server import Request, Response, serve_http


class VastSim(ControlSurface, LogRoutes):
    """An in-memory Vast.ai account and marketplace behind an HTTP server.

    Start it with ``await nursery.start(sim.serve)``; ``sim.url`` is then the base URL to give
    a client (``VAST_URL`` for the CLI). All state lives on the object, so a test can inspect
    and steer it directly while clients talk HTTP.
    """

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the API on ``host:port`` until cancelled; reports the base URL once bound."""
        await self._prepare_containers()
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

    @property
    def agent_url(self) -> str:
        """Where instances download the vk-trio agent (``--agent-url``) while they run
        their processes (``run_containers``)."""
        if self.url is None:
            raise RuntimeError("the simulator is not served yet")
        return self.url + AGENT_PATH

    async def handle(self, request: Request) -> Response:
        """Answer one HTTP request (the ``serve_http`` handler)."""
        if request.method == "GET" and request.path in self.served_files:
            return await self._served_file(request.path)
        if request.method == "GET" and request.path == AGENT_PATH and self.runs_containers:
            body = await trio.to_thread.run_sync(agent_bytes)
            return Response(body=body, headers=[("Content-Type", "application/octet-stream")])
        path = "/" + request.path.strip("/") + "/"
        found = self._match(request.method, path)
        if found is None:
            return error_response(404, "not_found", f"{request.method} {request.path} not found")
        route, params = found
        handler: RouteHandler = getattr(self, route.handler)
        gate = await self._gate(route, request) if route.gated else None
        if route.gated:
            self.settle()  # an account out of credit has its instances stopped
        response = gate or await handler(request, params)
        if route.counted:
            self._stats[route.endpoint] += 1
            if response.status >= 400:
                self._stats[f"{route.endpoint} {response.status}"] += 1
        return response

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in ROUTES:
            match = route.pattern.fullmatch(path)
            if match and route.method == method:
                return route, match.groupdict()
        return None

    async def _gate(self, route: Route, request: Request) -> Response | None:
        """Latency, injected failures, auth and rate limits, in that order; None lets it pass."""
        if self.faults.latency > 0:
            await trio.sleep(self.faults.latency)
        if self._draw(self.faults.rate_5xx):
            status = self._fault_rng.choice((500, 502, 503))
            return Response.text(f"{status} simulated server error", status)
        if self._draw(self.faults.rate_429):
            return rate_limited(RATE_LIMITS.get(route.endpoint, 1.0))
        key = self._api_key(request)
        if route.auth and not self._key_ok(key):
            return error_response(401, "auth_error", "Invalid user key")
        threshold = self._limiter.check(route.endpoint, key or "anonymous", trio.current_time())
        return None if threshold is None else rate_limited(threshold)

    @staticmethod
    def _api_key(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return request.param("api_key") or None

    def _key_ok(self, key: str | None) -> bool:
        return bool(key) and (self.config.api_key is None or key == self.config.api_key)

    async def _current_user(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(
            {
                "id": 4242,
                "username": "sim",
                "email": "sim@example.invalid",
                "fullname": "Vast Sim",
                "credit": round(self.credit(), 6),
                "balance": 0.0,
                "has_billing": True,
                "ssh_key": None,
                "host_agreement_accepted": False,
                "can_pay": True,
            }
        )
