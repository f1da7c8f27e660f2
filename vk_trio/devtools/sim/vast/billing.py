"""The account's money: its credit, billed down as instances run, and what Vast does without it.

Vast bills GPU time by the second while an instance is ``running`` and storage while it exists
(``SimInstance.cost``). The credit is what was set (``VastSimConfig.credit``, or the
``{"credit": <dollars>}`` fault) less everything billed since. An account out of credit has its
running instances stopped (storage keeps billing, so the credit goes below zero, as Vast's
does) and creates and starts are refused with 400 ``missing_billing`` (vast-api.md §5.4, §7).

Lazily, like everything in the simulator: the stop happens at the first API call or wait that
finds the credit gone, and an exact sum over every instance is made only when a cheap bound
(all live instances billing their full ``dph_total``) says the credit may be gone by now.

``GET /api/v0/charges/`` serves the bill per instance the way Vast's charges endpoint does
(``vastai show invoices-v1 --charges``): one ``instance`` result per instance that billed in
the ``day`` range, with ``gpu`` and ``storage`` items.
"""

from __future__ import annotations

import base64
import math

import trio
from loguru import logger

from vk_trio.devtools.sim.vast.config import VastSimConfig
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.devtools.sim.vast.routes import error_response, json_query_param
from vk_trio.devtools.sim.vast.state import SimInstance, SimState
from vk_trio.http_server import Request, Response

MISSING_BILLING = ("missing_billing", "You lack credit, see the billing page.")
"""Vast's 400 for a create or start on an account without credit (vast-api.md §5.4)."""

RECHECK_SECONDS = 60.0
"""At most this long between exact sums of the bill (the bound assumes today's instances)."""

CHARGES_PAGE = 20
"""``GET /api/v0/charges/`` rows per page when ``limit`` is not given (the CLI's default)."""


class Billing(SimState):
    """The credit, the bill of every instance, and the charges endpoint."""

    def __init__(self, config: VastSimConfig | None = None) -> None:
        super().__init__(config)
        self._credit_set = self.config.credit
        self._billed_when_set = 0.0
        """``billed()`` when the credit was last set."""
        self._checked_at = -math.inf
        self._credit_checked = self.config.credit
        """The exact credit at ``_checked_at`` (``settle``)."""
        self._burn = 0.0
        """USD/h of every live instance's ``dph_total``: none bills more (``settle``)."""

    def _bill_from(self, instance: SimInstance) -> None:
        """A new instance bills from now on."""
        self._burn += instance.dph_total

    def _bill_until(self, instance: SimInstance) -> None:
        """A destroyed instance bills no more."""
        self._burn = max(0.0, self._burn - instance.dph_total)

    def billed(self) -> float:
        """Dollars billed by every instance ever created, up to now."""
        now, boot = trio.current_time(), self.config.boot_seconds
        return sum(i.cost(now, boot) for i in self._instances.values())

    def credit(self) -> float:
        """The account's credit now: what was set, less what was billed since."""
        return self._credit_set - (self.billed() - self._billed_when_set)

    def set_credit(self, dollars: float) -> None:
        """Set the account's credit (a top-up, or draining it for a test)."""
        self._billed_when_set = self.billed()
        self._credit_set = float(dollars)
        self._checked_at = -math.inf
        logger.info("vast sim: credit set", credit=self._credit_set)
        self.settle()
        self._notify()

    def out_of_credit(self) -> bool:
        """Whether the account has no credit left (stopping its instances if so)."""
        return self.settle()

    def settle(self) -> bool:
        """Stop every running instance once the credit is gone; True when it is."""
        now = trio.current_time()
        floor = self._credit_checked - self._burn * max(0.0, now - self._checked_at) / 3600.0
        if floor > 0 and now - self._checked_at < RECHECK_SECONDS:
            return False
        self._credit_checked, self._checked_at = self.credit(), now
        if self._credit_checked > 0:
            return False
        stopped = [
            i
            for i in self._instances.values()
            if i.destroyed_at is None and i.intended_status == "running"
        ]
        for instance in stopped:
            self._stop_unpaid(instance, now)
        if stopped:
            logger.info("vast sim: out of credit; instances stopped", count=len(stopped))
            self._notify()
        return True

    def _stop_unpaid(self, instance: SimInstance, now: float) -> None:
        instance.bank(now, self.config.boot_seconds)
        instance.intended_status = "stopped"

    async def _charges(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v0/charges/``: the bill per instance over ``select_filters.day``."""
        try:
            filters = json_query_param(request, "select_filters", {})
            limit = int(request.param("limit") or CHARGES_PAGE)
            offset = int(base64.b64decode(request.param("after_token") or "MA==").decode())
        except ValueError as exc:
            return error_response(400, "invalid_args", str(exc))
        day = filters.get("day") if isinstance(filters, dict) else None
        if not isinstance(day, dict):
            return error_response(400, "invalid_args", "select_filters.day is required")
        since, until = float(day.get("gte", 0)), float(day.get("lte", math.inf))
        rows = [
            row
            for row in (self._charge(i) for _, i in sorted(self._instances.items()))
            if row["amount"] > 0 and row["end"] >= since and row["start"] <= until
        ]
        if request.param("latest_first") in ("true", "True", "1"):
            rows.reverse()
        page = rows[offset : offset + max(1, min(limit, 100))]
        after = offset + len(page)
        token = base64.b64encode(str(after).encode()).decode() if after < len(rows) else None
        return Response.json(
            {
                "success": True,
                "count": len(page),
                "total": len(rows),
                "next_token": token,
                "results": page,
            }
        )

    def _charge(self, instance: SimInstance) -> Row:
        """One instance's bill, shaped as a result of Vast's charges endpoint."""
        now, boot = trio.current_time(), self.config.boot_seconds
        ended = instance.destroyed_at if instance.destroyed_at is not None else now
        start = int(instance.start_date)
        end = int(instance.start_date + (ended - instance.created_at))
        gpu_hours = instance.running_seconds(now, boot) / 3600.0
        disk_hours = instance.storage_seconds(now) / 3600.0
        items = [
            _item(start, end, "gpu", gpu_hours, instance.gpu_per_hour),
            _item(start, end, "storage", disk_hours, instance.storage_per_hour),
        ]
        return {
            "start": start,
            "end": end,
            "type": "instance",
            "source": f"instance-{instance.id}",
            "description": f"Instance {instance.id} Charges",
            "amount": instance.cost(now, boot),
            "metadata": {"label": instance.label},
            "items": items,
        }


def _item(start: int, end: int, kind: str, hours: float, rate: float) -> Row:
    return {
        "start": start,
        "end": end,
        "type": kind,
        "source": None,
        "description": f"{hours:.3f} hours at ${rate:.3f}/hour",
        "amount": hours * rate,
        "metadata": {},
        "items": [],
    }
