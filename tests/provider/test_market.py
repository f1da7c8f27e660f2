"""The node's share of the market: identical queries cost one ``POST /bundles/`` while in
flight or fresh; offers being bought or used up are not tried by other pods."""

from __future__ import annotations

from typing import Any

import trio

from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.provider.market import OfferClaims, SharedSearches
from vk_trio.vast import Pacer, RetryPolicy, VastClient

QUERY: dict[str, Any] = {"gpu_name": {"eq": "RTX 3090"}, "rentable": {"eq": True}}
SEARCH = "POST /api/v0/bundles/"


async def test_fifty_identical_searches_cost_one_request(vast_sim: VastSim) -> None:
    async with VastClient(api_key="k", base_url=str(vast_sim.url), pacer=Pacer(scale=0)) as vast:
        searches = SharedSearches(vast, ttl=60.0)
        results: list[int] = []

        async def ask() -> None:
            results.append(len(await searches.search(QUERY)))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(ask)
        await searches.search(dict(reversed(list(QUERY.items()))))  # same query, other order
    assert vast_sim.stats()[SEARCH] == 1
    assert len(results) == 50 and len(set(results)) == 1 and results[0] > 0


async def test_an_answer_older_than_the_ttl_is_asked_again(vast_sim: VastSim) -> None:
    async with VastClient(api_key="k", base_url=str(vast_sim.url), pacer=Pacer(scale=0)) as vast:
        searches = SharedSearches(vast, ttl=0.05)
        await searches.search(QUERY)
        await trio.sleep(0.1)
        await searches.search(QUERY)
    assert vast_sim.stats()[SEARCH] == 2


async def test_a_failed_search_is_not_shared_or_kept(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory()
    sim.set_faults(rate_5xx=1.0)
    once = RetryPolicy(attempts=1)
    async with VastClient(
        api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0), retry=once
    ) as vast:
        searches = SharedSearches(vast, ttl=60.0)
        failures = 0

        async def ask() -> None:
            nonlocal failures
            try:
                await searches.search(QUERY)
            except Exception:
                failures += 1

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(ask)
        assert failures == 3
        sim.set_faults(rate_5xx=0.0)
        assert await searches.search(QUERY)  # the failure was not kept


def test_claimed_and_spent_offers_are_not_available() -> None:
    claims = OfferClaims(memory=2)
    with claims.claim(1):
        assert not claims.available(1) and claims.available(2)
    assert claims.available(1)  # released: the buy failed for another reason
    for offer_id in (1, 2, 3):
        claims.spend(offer_id)
    assert claims.available(1)  # the oldest was forgotten (memory=2)
    assert not claims.available(2) and not claims.available(3)
