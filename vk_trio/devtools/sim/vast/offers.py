"""The market's routes: search (three endpoints, one query language), GPU names, and taking an
offer off the market when it is bought."""

from __future__ import annotations

from typing import Any

import msgspec
from loguru import logger

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.devtools.sim.vast.routes import error_response
from vk_trio.devtools.sim.vast.state import SimState, wall_time
from vk_trio.http_server import Request, Response


class OfferRoutes(SimState):
    """``POST|GET /api/v0/bundles/``, ``PUT /api/v0/search/asks/``, ``GET /api/v0/gpu_names/``."""

    async def _search(self, request: Request, params: dict[str, str]) -> Response:
        try:
            body = self._search_body(request)
            query = market.parse_offer_query(body)
        except (msgspec.DecodeError, market.QueryError) as exc:
            return error_response(400, "invalid_request", str(exc))
        offers = market.search(self._offers.values(), query, now=wall_time())
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

    async def _gpu_names(self, request: Request, params: dict[str, str]) -> Response:
        names = sorted({str(row.get("gpu_name")) for row in self._offers.values()})
        return Response.json({"gpu_names": names})
