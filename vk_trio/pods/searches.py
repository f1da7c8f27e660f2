"""One offer search per distinct query, shared by every pod that asks within a few seconds.

Fifty replicas of one Deployment have identical annotations, hence identical queries. Without
this, each would cost a ``POST /bundles/`` (paced at one every 2 s by Vast): searches would
grow with pods. Here concurrent askers of one query wait for the one request in flight, and
later askers reuse its answer for ``ttl`` seconds. Reusing a slightly old answer is safe: the
node's offer claims keep its pods off each other's offers, and an offer sold meanwhile is
answered ``no_such_ask`` and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from vk_trio.vast import Offer, VastClient

TTL = 5.0
"""Seconds an answer is reused; short, because the marketplace moves."""


@dataclass
class _Entry:
    done: trio.Event = field(default_factory=trio.Event)
    offers: list[Offer] | None = None
    """None once done means the request failed or its asker was cancelled."""
    at: float = 0.0


class SharedSearches:
    """Single-flight, briefly cached offer searches for one node."""

    def __init__(self, vast: VastClient, *, ttl: float = TTL) -> None:
        self._vast = vast
        self._ttl = ttl
        self._entries: dict[bytes, _Entry] = {}

    async def search(self, query: dict[str, Any]) -> list[Offer]:
        """Offers for ``query``: from the request in flight, a fresh-enough answer, or a new
        request. A failed request is not shared: each waiter then asks again itself, and
        gets (and handles) its own error."""
        key = msgspec.json.encode(query, order="sorted")
        while True:
            entry = self._entries.get(key)
            if (
                entry is not None
                and entry.done.is_set()
                and (entry.offers is None or trio.current_time() - entry.at > self._ttl)
            ):
                entry = None
            if entry is None:
                return await self._ask(key, query)
            await entry.done.wait()
            if entry.offers is not None:
                return list(entry.offers)

    async def _ask(self, key: bytes, query: dict[str, Any]) -> list[Offer]:
        self._forget_stale()
        entry = self._entries[key] = _Entry()
        try:
            entry.offers = await self._vast.search_offers(query)
            entry.at = trio.current_time()
        finally:
            entry.done.set()
            if entry.offers is None and self._entries.get(key) is entry:
                del self._entries[key]
        return list(entry.offers)

    def _forget_stale(self) -> None:
        now = trio.current_time()
        stale = [
            key
            for key, entry in self._entries.items()
            if entry.done.is_set() and now - entry.at > self._ttl
        ]
        for key in stale:
            del self._entries[key]
