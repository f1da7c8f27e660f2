"""VastClient against the Vast simulator over real sockets: the whole instance lifecycle,
pagination, every injected fault, auth, and the pacer keeping a burst under the real rate
limits. The sim is steered through its Python API in the same trio run; everything the client
does goes over HTTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import Faults, VastSim
from vk_trio.retry import Backoff
from vk_trio.vast import (
    CreateInstance,
    CreateOutcomeUnknown,
    Instance,
    OfferGone,
    Pacer,
    RetryPolicy,
    VastAuthError,
    VastClient,
    VastError,
    VastUnavailable,
)

KEY = "vk-sim-key-8d41c0a7e2"
QUICK = RetryPolicy(attempts=10, backoff=Backoff(0.01, 0.1, jitter=0.1))
"""Real-clock tests: retry fast, and often enough that 30 % fault rates are survivable."""
QUERY: dict[str, Any] = {
    "rentable": {"eq": True},
    "rented": {"eq": False},
    "num_gpus": {"eq": "1"},  # numbers arrive as strings from the CLI language (§3.2)
    "reliability": {"gt": "0.9"},
    "gpu_ram": {"gte": 4000.0},
    "order": [["dph_total", "asc"]],
    "type": "on-demand",
    "limit": 40,
    "allocated_storage": 10.0,
}


def request(label: str) -> CreateInstance:
    return CreateInstance(
        image="busybox:latest",
        disk=10.0,
        label=label,
        env={"-p 8000:8000": "1", "MODE": "test"},
        onstart="sh",
        args=["-c", "sleep infinity"],
    )


@asynccontextmanager
async def client_for(
    sim: VastSim,
    *,
    api_key: str = KEY,
    pacer: Pacer | None = None,
    retry: RetryPolicy = QUICK,
    http_timeout: float | None = 10.0,
) -> AsyncIterator[VastClient]:
    assert sim.url is not None
    async with (
        httpx.AsyncClient(timeout=http_timeout) as http,
        VastClient(
            api_key=api_key,
            base_url=sim.url,
            http=http,
            pacer=pacer or Pacer(scale=0),
            retry=retry,
            rng=random.Random(0),
        ) as client,
    ):
        yield client


async def cheapest(client: VastClient, count: int = 1) -> list[int]:
    offers = await client.search_offers(QUERY)
    assert len(offers) >= count
    return [offer.id for offer in offers[:count]]


async def wait_for_status(sim: VastSim, instance_id: int, status: str) -> None:
    def reached(s: VastSim) -> bool:
        row = s.instance(instance_id)
        return row is not None and row["actual_status"] == status

    with trio.fail_after(5):
        await sim.wait_until(reached)


async def test_search_understands_a_cli_style_query(vast_sim: VastSim) -> None:
    async with client_for(vast_sim) as client:
        offers = await client.search_offers(QUERY)
    assert 0 < len(offers) <= 40
    assert all(o.num_gpus == 1 and o.reliability > 0.9 and o.gpu_ram >= 4000 for o in offers)
    prices = [o.dph_total for o in offers]
    assert prices == sorted(prices)


async def test_instance_lifecycle(vast_sim: VastSim) -> None:
    async with client_for(vast_sim) as client:
        [offer_id] = await cheapest(client)
        created = await client.create_instance(offer_id, request("vk-life-1"))
        assert created.started
        [found] = await client.find_by_label("vk-life-1")
        assert found.id == created.instance_id

        await wait_for_status(vast_sim, created.instance_id, "running")
        shown = await listed(client, created.instance_id)
        assert shown is not None
        assert (shown.actual_status, shown.label, shown.image_uuid) == (
            "running",
            "vk-life-1",
            "busybox:latest",
        )
        assert shown.env()["MODE"] == "test"
        assert shown.address and shown.address == shown.address.strip()
        assert set(shown.endpoints()) == {"22/tcp", "8000/tcp"}

        logs = await client.request_logs(created.instance_id, tail=3)
        assert logs.splitlines()[-1].endswith("service started")
        assert len(logs.splitlines()) == 3

        await client.destroy_instance(created.instance_id)
        assert await listed(client, created.instance_id) is None
        await client.destroy_instance(created.instance_id)  # already gone: still fine
    [entry] = vast_sim.ledger()
    assert entry["id"] == created.instance_id
    assert entry["destroyed_at"] is not None


async def test_listing_pages_through_more_than_25_instances(vast_sim: VastSim) -> None:
    async with client_for(vast_sim) as client:
        offer_ids = await cheapest(client, 32)
        for n, offer_id in enumerate(offer_ids):
            label = "vk-page" if n < 30 else f"vk-other-{n}"
            await client.create_instance(offer_id, request(label))
        everything = await client.list_instances()
        labelled = await client.find_by_label("vk-page")
    assert len(everything) == 32
    ids = [i.id for i in everything]
    assert ids == sorted(set(ids))
    assert len(labelled) == 30
    assert {i.label for i in labelled} == {"vk-page"}
    assert vast_sim.stats()["GET /api/v1/instances/"] == 4  # 2 pages, twice


async def test_429_and_5xx_storms_are_retried_away(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(seed=3, faults=Faults(rate_429=0.3, rate_5xx=0.3))
    async with client_for(sim) as client:
        for _ in range(5):
            assert await client.search_offers(QUERY)
            assert await client.list_instances() == []
            assert await client.find_by_label("vk-none") == []
    stats = sim.stats()
    assert sum(n for key, n in stats.items() if key.endswith(" 429")) > 0
    assert sum(n for key, n in stats.items() if key[-3:] in ("500", "502", "503")) > 0


async def test_a_create_hit_by_a_5xx_is_reported_not_repeated(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await vast_sim_factory(seed=5, faults=Faults(rate_5xx=0.5))
    outcomes: list[str] = []
    async with client_for(sim) as client:
        offer_ids = await cheapest(client, 12)
        for n, offer_id in enumerate(offer_ids):
            try:
                await client.create_instance(offer_id, request(f"vk-5xx-{n}"))
            except CreateOutcomeUnknown as exc:
                assert exc.label == f"vk-5xx-{n}"
                outcomes.append("unknown")
            else:
                outcomes.append("created")
        sim.set_faults(rate_5xx=0.0)
        found = {i.label for i in await client.list_instances()}
    assert "unknown" in outcomes and "created" in outcomes
    assert sim.stats()["PUT /api/v0/asks/{id}/"] == len(offer_ids)  # never sent twice
    assert found == {f"vk-5xx-{n}" for n, o in enumerate(outcomes) if o == "created"}


async def test_latency_is_survived_and_a_short_timeout_is_unavailable(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await vast_sim_factory(faults=Faults(latency=0.2))
    async with client_for(sim) as client:
        started = trio.current_time()
        assert await client.list_instances() == []
        assert trio.current_time() - started >= 0.2
    impatient = RetryPolicy(attempts=2, backoff=Backoff(0.0, 30.0))
    async with client_for(sim, http_timeout=0.05, retry=impatient) as client:
        with pytest.raises(VastUnavailable) as caught:
            await client.list_instances()
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_a_timed_out_create_is_found_by_its_label(vast_sim: VastSim) -> None:
    async with client_for(vast_sim) as client:
        [offer_id] = await cheapest(client)
    vast_sim.set_faults(latency=0.2)
    async with client_for(vast_sim, http_timeout=0.05) as client:
        with pytest.raises(CreateOutcomeUnknown) as caught:
            await client.create_instance(offer_id, request("vk-slow"))
    assert caught.value.offer_id == offer_id
    with trio.fail_after(5):
        await vast_sim.wait_until(lambda s: s.created == 1)  # it was processed after all
    async with client_for(vast_sim) as client:
        [found] = await client.find_by_label(caught.value.label)
    assert found.id == vast_sim.ledger()[0]["id"]


async def test_a_taken_offer_is_offer_gone(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(faults=Faults(offer_taken=1.0))
    async with client_for(sim) as client:
        first, second = await cheapest(client, 2)
        with pytest.raises(OfferGone) as caught:
            await client.create_instance(first, request("vk-taken"))
        assert (caught.value.offer_id, caught.value.status) == (first, 404)
        sim.set_faults(offer_taken=0.0)
        with pytest.raises(OfferGone):  # sold is sold
            await client.create_instance(first, request("vk-taken"))
        created = await client.create_instance(second, request("vk-taken"))
    assert [e["id"] for e in sim.ledger()] == [created.instance_id]


async def test_a_lost_create_response_is_found_by_label(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(faults=Faults(lose_create_response=1.0))
    async with client_for(sim) as client:
        [offer_id] = await cheapest(client)
        with pytest.raises(CreateOutcomeUnknown) as caught:
            await client.create_instance(offer_id, request("vk-lost"))
        assert caught.value.status == 502
        [found] = await client.find_by_label("vk-lost")
        await client.destroy_instance(found.id)
    assert sim.stats()["PUT /api/v0/asks/{id}/"] == 1
    assert [(e["id"], e["destroyed_at"] is not None) for e in sim.ledger()] == [(found.id, True)]


async def test_a_wrong_key_is_an_auth_error(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(api_key=KEY)
    async with client_for(sim, api_key="not-the-right-key") as client:
        assert await client.search_offers(QUERY)  # search needs no key (§1)
        failures: list[VastError] = []
        for label in (None, "vk-none"):
            with pytest.raises(VastAuthError) as caught:
                await (client.list_instances() if label is None else client.find_by_label(label))
            failures.append(caught.value)
    assert all(f.status == 401 and f.code == "auth_error" for f in failures)
    assert all("not-the-right-key" not in str(f) for f in failures)
    async with client_for(sim) as client:
        assert await client.list_instances() == []


async def test_broken_instances_show_their_state(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(faults=Faults(stuck_loading=1.0))
    async with client_for(sim) as client:
        stuck, oci, offline = await cheapest(client, 3)
        stuck_id = (await client.create_instance(stuck, request("vk-stuck"))).instance_id
        sim.set_faults(stuck_loading=0.0)
        oci_id = (await client.create_instance(oci, request("vk-oci"))).instance_id
        sim.set_oci_failure(oci_id)
        offline_id = (await client.create_instance(offline, request("vk-off"))).instance_id
        await wait_for_status(sim, offline_id, "running")
        sim.set_offline(offline_id)
        await trio.sleep(3 * 0.2)  # several boot times: nothing moves on by itself
        shown = {i: await listed(client, i) for i in (stuck_id, oci_id, offline_id)}
    assert status(shown[stuck_id]) == "loading"
    assert status(shown[oci_id]) == "created"
    assert "OCI runtime create failed" in (message(shown[oci_id]))
    assert status(shown[offline_id]) == "offline"


async def listed(client: VastClient, instance_id: int) -> Instance | None:
    """The instance as the list shows it, None when it is not listed."""
    return next((i for i in await client.list_instances() if i.id == instance_id), None)


def status(instance: Instance | None) -> str | None:
    assert instance is not None
    return instance.actual_status


def message(instance: Instance | None) -> str:
    assert instance is not None
    return instance.status_msg or ""


# -- pacing under the real limits (virtual time) -------------------------------------------


@pytest.fixture
def jumpy_clock() -> MockClock:
    """Virtual time that jumps after 10 ms of real idleness: small enough that minutes of
    pacing take a second, large enough that socket I/O is not mistaken for idleness."""
    return MockClock(autojump_threshold=0.01)


async def burst(client: VastClient, offer_ids: list[int]) -> None:
    """Many pods starting at once: each buys, finds itself, and is deleted."""

    async def pod(n: int, offer_id: int) -> None:
        created = await client.create_instance(offer_id, request(f"vk-burst-{n}"))
        await client.find_by_label(f"vk-burst-{n}")
        await client.destroy_instance(created.instance_id)

    async with trio.open_nursery() as nursery:
        for n, offer_id in enumerate(offer_ids):
            nursery.start_soon(pod, n, offer_id)


async def test_the_pacer_keeps_a_burst_under_the_real_limits(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(rate_limits="real")
    async with client_for(sim, pacer=Pacer(), http_timeout=None) as client:
        offer_ids = await cheapest(client, 10)
        started = trio.current_time()
        await burst(client, offer_ids)
        elapsed = trio.current_time() - started
    assert not [key for key in sim.stats() if key.endswith(" 429")]
    assert sim.created == 10
    assert 9 * 4.5 * 1.1 <= elapsed < 9 * 4.5 * 1.1 + 10  # creates are the bottleneck


async def test_without_the_pacer_the_same_burst_meets_429s(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(rate_limits="real")
    unpaced = Pacer(scale=0)
    async with client_for(sim, pacer=unpaced, retry=RetryPolicy(), http_timeout=None) as client:
        offer_ids = await cheapest(client, 10)
        with pytest.raises(BaseExceptionGroup) as caught:
            await burst(client, offer_ids)
    assert caught.group_contains(VastError)
    assert sum(n for key, n in sim.stats().items() if key.endswith(" 429")) > 10


async def test_change_bid_resumes_an_outbid_instance_and_reads_what_it_bills(
    vast_sim: VastSim,
) -> None:
    async with client_for(vast_sim) as client:
        [offer_id] = await cheapest(client)
        floor = next(o for o in vast_sim.offers() if o["id"] == offer_id)["min_bid"]
        bid = CreateInstance(image="busybox:latest", disk=10.0, label="bid", price=floor)
        created = await client.create_instance(offer_id, bid)
        vast_sim.outbid(created.instance_id, price=floor * 2)
        [stopped] = await client.list_instances()
        assert stopped.actual_status == "stopped"
        assert stopped.billing == stopped.storage_total_cost > 0  # storage only
        with pytest.raises(VastError):
            await client.change_bid(created.instance_id, floor / 2)  # below the floor
        await client.change_bid(created.instance_id, floor * 2)
        [resumed] = await client.list_instances()
        assert resumed.actual_status != "stopped"
        assert resumed.dph_total == pytest.approx(floor * 2 + resumed.storage_total_cost)
