"""The control surface for tests: ``/_sim/ledger``, ``/_sim/stats``, ``/_sim/create-requests``
and the Python API that inspects and steers the market (offers, instances, the ledger, call
counts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.instances import InstanceRoutes
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.http_server import Request, Response


class ControlSurface(InstanceRoutes):
    """What a test reads and changes directly, beside the HTTP API."""

    async def _get_ledger(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.ledger())

    async def _get_stats(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.stats())

    async def _get_create_requests(self, request: Request, params: dict[str, str]) -> Response:
        """``create_requests`` over HTTP: a test that runs the simulator as a process (the
        chaos soak) checks from outside that no Secret value was ever sent to Vast."""
        return Response.json(self.create_requests())

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

    def create_requests(self) -> list[Row]:
        """The body of every create that made an instance, in order: what Vast keeps with
        each instance (its env, its onstart and args)."""
        return [dict(i.body) for _, i in sorted(self._instances.items())]

    def ledger(self) -> list[Row]:
        """Every instance ever created, with trio-clock ``created_at``/``destroyed_at``, the
        wall-clock ``start_date`` (epoch seconds, as the API shows it) and the bill in
        dollars so far, as Vast bills (``SimInstance.cost``): GPU by the second while
        ``running`` (``gpu_seconds``), storage from creation until destroyed."""
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
                "process_started": i.process_started,
                "cost": i.cost(now, self.config.boot_seconds),
                "gpu_seconds": i.running_seconds(now, self.config.boot_seconds),
                "storage_per_hour": i.storage_per_hour,
            }
            for _, i in sorted(self._instances.items())
        ]

    def stats(self) -> dict[str, int]:
        """API calls by endpoint (``"PUT /api/v0/asks/{id}/": 2``), plus one key per endpoint
        and error status (``"PUT /api/v0/asks/{id}/ 429": 1``)."""
        return dict(self._stats)
