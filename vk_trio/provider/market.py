"""How the pods of one node share the marketplace: shared searches and offer claims.

``SharedSearches``: fifty replicas of one Deployment have identical annotations, hence
identical queries. Without sharing, each would cost a ``POST /bundles/`` (paced at one every
2 s by Vast): searches would grow with pods. Here concurrent askers of one query wait for the
one request in flight, and later askers reuse its answer for ``ttl`` seconds. Reusing a
slightly old answer is safe: ``OfferClaims`` keeps the node's pods off each other's offers,
and an offer sold meanwhile is answered ``no_such_ask`` and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from vk_trio.vast import Offer, VastClient

TTL = 5.0
"""Seconds an answer is reused; short, because the marketplace moves."""

REFRESH = 1.0
"""Seconds an answer is kept at least, however many pods find it used up (``expire``): a
thousand pods waiting for offers asked for ten fresh searches a second, most of what the
marketplace spent on them, when a buy takes longer than that to use up an offer anyway."""

SPENT_MEMORY = 10_000
"""Used-up offers remembered; far more than any answer younger than ``TTL`` can hold."""


@dataclass
class _Entry:
    done: trio.Event = field(default_factory=trio.Event)
    offers: list[Offer] | None = None
    """None once done means the request failed or its asker was cancelled."""
    at: float = 0.0


class SharedSearches:
    """Single-flight, briefly cached offer searches for one node."""

    def __init__(self, vast: VastClient, *, ttl: float = TTL, refresh: float = REFRESH) -> None:
        self._vast = vast
        self._ttl = ttl
        self._refresh = refresh
        self._entries: dict[bytes, _Entry] = {}

    async def search(self, query: dict[str, Any]) -> list[Offer]:
        """Offers for ``query``: from the request in flight, a fresh-enough answer, or a new
        request. A failed request is not shared: each waiter then asks again itself, and
        gets (and handles) its own error."""
        offers, _ = await self.search_dated(query)
        return offers

    def expire(self, query: dict[str, Any], answered_at: float) -> None:
        """Drop the answer of ``answered_at`` (``search_dated``): the node's pods hold or
        bought every offer in it, so the next asker must ask Vast again rather than wait
        out ``ttl``. A newer answer stays, and so does one younger than ``refresh``."""
        key = msgspec.json.encode(query, order="sorted")
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.done.is_set()
            and entry.at <= answered_at
            and trio.current_time() - entry.at >= self._refresh
        ):
            del self._entries[key]

    async def search_dated(self, query: dict[str, Any]) -> tuple[list[Offer], float]:
        """``search``, and when the answer came (for ``expire``)."""
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
                return list(entry.offers), entry.at

    async def _ask(self, key: bytes, query: dict[str, Any]) -> tuple[list[Offer], float]:
        self._forget_stale()
        entry = self._entries[key] = _Entry()
        try:
            entry.offers = await self._vast.search_offers(query)
            entry.at = trio.current_time()
        finally:
            entry.done.set()
            if entry.offers is None and self._entries.get(key) is entry:
                del self._entries[key]
        return list(entry.offers), entry.at

    def _forget_stale(self) -> None:
        now = trio.current_time()
        stale = [
            key
            for key, entry in self._entries.items()
            if entry.done.is_set() and now - entry.at > self._ttl
        ]
        for key in stale:
            del self._entries[key]


class OfferClaims:
    """Which offers this node's pods must not try: being bought by a sibling, or used up.

    Without claims, fifty pods ranking the same best offer would race for it and all but
    one would get ``no_such_ask``; without remembering used-up offers (bought, or found
    gone), pods reading a shared search answer would keep trying offers already sold.
    """

    def __init__(self, *, memory: int = SPENT_MEMORY) -> None:
        self._busy: set[int] = set()
        self._spent: dict[int, None] = {}  # insertion-ordered, so the oldest go first
        self._memory = memory

    def available(self, offer_id: int) -> bool:
        return offer_id not in self._busy and offer_id not in self._spent

    @contextmanager
    def claim(self, offer_id: int) -> Iterator[None]:
        """Hold ``offer_id`` while one pod tries to buy it."""
        self._busy.add(offer_id)
        try:
            yield
        finally:
            self._busy.discard(offer_id)

    def spend(self, offer_id: int) -> None:
        """``offer_id`` was bought, or Vast said it is gone: never try it again."""
        self._spent[offer_id] = None
        while len(self._spent) > self._memory:
            del self._spent[next(iter(self._spent))]
