"""The Vast.ai simulator over HTTP: query language, buying, lifecycle, listing, logs, limits,
faults, ledger and stats, each checked against ``vast-api.md``.

Tests that depend on time use ``jump_clock`` (trio's ``MockClock`` with a small non-zero
autojump threshold, because the requests go over real sockets) and assert virtual times.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import (
    Faults,
    VastSim,
    VastSimConfig,
    add_arguments,
    config_from_args,
)
from vk_trio.devtools.sim.vast.market import country

Json = Any
REPO_ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps when every task waits (5 ms of real idleness first)."""
    return trio.testing.MockClock(autojump_threshold=0.005)


@asynccontextmanager
async def api(sim: VastSim, key: str | None = "test") -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    assert sim.url is not None
    async with httpx.AsyncClient(base_url=sim.url, headers=headers) as client:
        yield client


async def search(client: httpx.AsyncClient, query: Json) -> list[Json]:
    response = await client.post("/api/v0/bundles/", json=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    offers: list[Json] = response.json()["offers"]
    return offers


async def create(client: httpx.AsyncClient, offer_id: int, **body: Any) -> httpx.Response:
    payload = {"image": "busybox", "disk": 10, "label": "pod", "runtype": "args", **body}
    return await client.put(f"/api/v0/asks/{offer_id}/", json=payload)


async def buy(sim: VastSim, client: httpx.AsyncClient, **body: Any) -> int:
    """Create an instance on the cheapest offer on the market; returns the instance id."""
    offer_id = min(sim.offers(), key=lambda o: o["dph_base"])["id"]
    response = await create(client, offer_id, **body)
    assert response.status_code == 200, response.text
    instance_id: int = response.json()["new_contract"]
    return instance_id


def status_of(sim: VastSim, instance_id: int) -> str | None:
    instance = sim.instance(instance_id)
    assert instance is not None
    status: str | None = instance["actual_status"]
    return status


# ---------------------------------------------------------------------------------------------
# Marketplace


def test_the_seeded_market_is_realistic_and_reproducible() -> None:
    first, again, other = (
        VastSim().offers(),
        VastSim().offers(),
        VastSim(VastSimConfig(seed=7)).offers(),
    )
    assert first == again
    assert [o["id"] for o in first] != [o["id"] for o in other]
    assert len(first) >= 200
    names = {o["gpu_name"] for o in first}
    assert {"RTX 3060", "RTX 3060 Ti", "RTX 4090", "A100 SXM4", "H100 SXM"} <= names
    countries = {country(o["geolocation"]) for o in first}
    assert {"US", "CA", "SE", "JP"} <= countries
    cheap_na_3060 = [
        o
        for o in first
        if o["gpu_name"] == "RTX 3060" and country(o["geolocation"]) in ("US", "CA")
        and o["dph_base"] < 0.3 and o["verification"] == "verified"
    ]  # fmt: skip
    assert len(cheap_na_3060) >= 5


NUM_GPUS_CASES = [
    pytest.param({"eq": "2"}, lambda n: n == 2, id="eq-string"),
    pytest.param({"neq": 1}, lambda n: n != 1, id="neq"),
    pytest.param({"gt": "4"}, lambda n: n > 4, id="gt-string"),
    pytest.param({"gte": 4}, lambda n: n >= 4, id="gte"),
    pytest.param({"lt": "2"}, lambda n: n < 2, id="lt-string"),
    pytest.param({"lte": 2}, lambda n: n <= 2, id="lte"),
    pytest.param({"in": ["2", 8]}, lambda n: n in (2, 8), id="in-mixed"),
    pytest.param({"notin": [1, "2"]}, lambda n: n not in (1, 2), id="notin-mixed"),
    pytest.param({"gte": "2", "lte": "4"}, lambda n: 2 <= n <= 4, id="range"),
]


@pytest.mark.parametrize(("condition", "expected"), NUM_GPUS_CASES)
async def test_each_operator_with_numbers_sent_as_strings(
    vast_sim: VastSim, condition: Json, expected: Callable[[int], bool]
) -> None:
    async with api(vast_sim) as client:
        offers = await search(client, {"num_gpus": condition})
    want = sorted(o["id"] for o in vast_sim.offers() if expected(o["num_gpus"]))
    assert want, "the case must select something"
    assert sorted(o["id"] for o in offers) == want


GEO_CASES = [
    pytest.param({"eq": "US"}, {"US"}, id="eq"),
    pytest.param({"eq": "ca"}, {"CA"}, id="eq-lowercase"),
    pytest.param({"in": ["US", "CA"]}, {"US", "CA"}, id="in"),
]


@pytest.mark.parametrize(("condition", "countries"), GEO_CASES)
async def test_geolocation_filters_by_country_code(
    vast_sim: VastSim, condition: Json, countries: set[str]
) -> None:
    async with api(vast_sim) as client:
        offers = await search(client, {"geolocation": condition})
    assert offers
    assert {country(o["geolocation"]) for o in offers} == countries


async def test_geolocation_notin_and_virtual_columns(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        not_na = await search(client, {"geolocation": {"notin": ["US", "CA"]}})
        verified = await search(client, {"verified": {"eq": "true"}})
        datacenter = await search(client, {"datacenter": {"eq": True}})
        cli_defaults = await search(
            client,
            {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True}},
        )
    assert not_na and all(country(o["geolocation"]) not in ("US", "CA") for o in not_na)
    assert verified and all(o["verification"] == "verified" for o in verified)
    assert "verified" not in verified[0]  # virtual: filters, but is not a key of the rows
    assert datacenter and all(o["hosting_type"] == 1 for o in datacenter)
    assert sorted(o["id"] for o in cli_defaults) == sorted(o["id"] for o in verified)


async def test_order_limit_and_the_get_form(vast_sim: VastSim) -> None:
    query = {"gpu_name": {"eq": "RTX 4090"}, "order": [["dph_total", "desc"]], "limit": "4"}
    async with api(vast_sim) as client:
        posted = await search(client, query)
        response = await client.get("/api/v0/bundles", params={"q": json.dumps(query)})
    prices = [o["dph_total"] for o in posted]
    assert len(posted) == 4
    assert prices == sorted(prices, reverse=True)
    assert [o["id"] for o in response.json()["offers"]] == [o["id"] for o in posted]


async def test_bid_prices_at_min_bid_and_storage_is_priced_in(vast_sim: VastSim) -> None:
    query = {"gpu_name": {"eq": "RTX 3090"}, "limit": 5, "order": [["id", "asc"]]}
    async with api(vast_sim) as client:
        demand = await search(client, {**query, "allocated_storage": 100})
        bid = await search(client, {**query, "type": "bid", "allocated_storage": 100})
    for on_demand, interruptible in zip(demand, bid, strict=True):
        storage = on_demand["storage_cost"] * 100 / 720
        assert on_demand["dph_total"] == pytest.approx(on_demand["dph_base"] + storage)
        assert interruptible["dph_total"] == pytest.approx(on_demand["min_bid"] + storage)
        assert interruptible["is_bid"] is True


async def test_unknown_fields_are_ignored_and_bad_bodies_refused(vast_sim: VastSim) -> None:
    async with api(vast_sim, key=None) as client:
        everything = await search(client, {"no_such_field": {"eq": 1}, "num_gpus": {"zz": 3}})
        refused = await client.post("/api/v0/bundles/", json=[1, 2])
    assert len(everything) == len(vast_sim.offers())
    assert refused.status_code == 400
    assert refused.json()["msg"] == "Invalid query: must be dict of conditions"


async def test_offers_can_be_removed_and_added_at_run_time(vast_sim: VastSim) -> None:
    wanted = {"gpu_name": {"eq": "RTX 3060"}, "geolocation": {"eq": "US"}, "dph_total": {"lt": 0.3}}
    vast_sim.remove_offers(lambda o: o["gpu_name"] == "RTX 3060")
    async with api(vast_sim) as client:
        assert await search(client, wanted) == []
        [offer_id] = vast_sim.add_offers(
            [{"gpu_name": "RTX 3060", "dph_total": 0.12, "geolocation": "Texas, US"}]
        )
        [offer] = await search(client, wanted)
    assert offer["id"] == offer_id
    assert offer["dph_total"] == pytest.approx(0.12)
    assert offer["min_bid"] < offer["dph_base"]


# ---------------------------------------------------------------------------------------------
# Buying and auth


async def test_an_offer_can_be_bought_once(vast_sim: VastSim) -> None:
    offer_id = vast_sim.offers()[0]["id"]
    async with api(vast_sim) as client:
        first = await create(client, offer_id, env={"-p 8000:8000": "1"})
        second = await create(client, offer_id)
        left = await search(client, {"id": {"eq": offer_id}})
    assert first.status_code == 200
    assert set(first.json()) == {"success", "new_contract", "instance_api_key"}
    assert second.status_code == 404
    assert second.json() == {
        "success": False,
        "error": "no_such_ask",
        "msg": f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available.",
        "ask_id": offer_id,
    }
    assert left == []


async def test_auth_header_query_key_and_configured_key(vast_sim_factory: VastSimFactory) -> None:
    sim = await vast_sim_factory(api_key="secret")
    async with api(sim, key=None) as client:
        missing = await client.get("/api/v1/instances/")
        by_query = await client.get("/api/v1/instances/", params={"api_key": "secret"})
        offers = await client.post("/api/v0/bundles/", json={})
        names = await client.get("/api/v0/gpu_names/unique/")
    async with api(sim, key="wrong") as client:
        wrong = await client.get("/api/v1/instances/")
    async with api(sim, key="secret") as client:
        user = await client.get("/api/v0/users/current")
    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    assert by_query.status_code == offers.status_code == names.status_code == 200
    assert "RTX 4090" in names.json()["gpu_names"]
    assert user.json()["host_agreement_accepted"] is False


# ---------------------------------------------------------------------------------------------
# Instances


async def test_boot_timeline_follows_the_trio_clock(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory(boot_seconds=100)
    env = {"FOO": "bar", "-p 8000:8000": "1", "-p 9000:9000/udp": "1"}
    async with api(sim) as client:
        instance_id = await buy(sim, client, env=env, onstart="sh", args=["-c", "serve"])
        start = trio.current_time()
        seen = {}
        for at in (0, 30, 50, 99, 100):
            await trio.sleep_until(start + at)
            response = await client.get(f"/api/v0/instances/{instance_id}/")
            seen[at] = response.json()["instances"]
    assert {at: row["actual_status"] for at, row in seen.items()} == {
        0: None, 30: "created", 50: "loading", 99: "loading", 100: "running",
    }  # fmt: skip
    assert seen[50]["ports"] is None
    running = seen[100]
    assert set(running["ports"]) == {"22/tcp", "8000/tcp", "9000/udp"}
    host_port = running["ports"]["8000/tcp"][0]["HostPort"]
    assert isinstance(host_port, str) and int(host_port) != 8000
    assert running["extra_env"] == [[k, v] for k, v in env.items()]
    assert running["public_ipaddr"].strip().count(".") == 3
    assert running["image_args"] == ["-c", "serve"] and running["onstart"] == "sh"
    assert running["label"] == "pod" and running["image_runtype"] == "args"
    assert isinstance(running["start_date"], float)


async def test_v1_list_pages_by_25_with_tokens(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        ids = [await buy(vast_sim, client, label=f"pod-{i % 3}") for i in range(60)]
        pages, token = [], None
        while True:
            params: dict[str, str] = {"after_token": token} if token else {}
            body = (await client.get("/api/v1/instances/", params=params)).json()
            pages.append(body)
            token = body["next_token"]
            if token is None:
                break
    assert [p["instances_found"] for p in pages] == [25, 25, 10]
    assert [i["id"] for p in pages for i in p["instances"]] == sorted(ids)
    assert pages[0]["total_instances"] == 60
    assert pages[0]["label_counts"] == {"pod-0": 20, "pod-1": 20, "pod-2": 20}
    assert set(pages[0]) == {
        "success", "instances_found", "total_instances", "label_counts", "next_token", "instances",
    }  # fmt: skip


async def test_v1_list_filters_orders_and_limits(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        labelled = [await buy(vast_sim, client, label=label) for label in ("a", "b", "a")]
        unlabelled = await buy(vast_sim, client, label=None)

        async def listed(**params: str) -> Json:
            response = await client.get("/api/v1/instances/", params=params)
            return response.json()

        by_label = await listed(select_filters='{"label": {"in": ["a", null]}}')
        newest_first = await listed(order_by='[{"col": "id", "dir": "desc"}]', limit="2")
        tiny = await listed(limit="0")
        by_id = await listed(select_filters=f'{{"id": {{"gte": "{labelled[1]}"}}}}')
        bad = await client.get("/api/v1/instances/", params={"after_token": "!!not-a-token"})
        legacy = await client.get("/api/v0/instances/")
    assert [i["id"] for i in by_label["instances"]] == [labelled[0], labelled[2], unlabelled]
    assert by_label["label_counts"] == {"a": 2, "": 1}
    assert [i["id"] for i in newest_first["instances"]] == [unlabelled, labelled[2]]
    assert newest_first["next_token"] is not None
    assert tiny["instances_found"] == 4  # limit <= 0 means 5
    assert [i["id"] for i in by_id["instances"]] == [*labelled[1:], unlabelled]
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_token"
    assert legacy.status_code == 410 and "deprecated" in legacy.json()["msg"]


async def test_show_modify_and_destroy(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client)
        path = f"/api/v0/instances/{instance_id}/"
        relabel = await client.put(path, json={"label": "renamed"})
        stop = await client.put(path.rstrip("/"), json={"state": "stopped"})
        stopped = (await client.get(path)).json()["instances"]
        bad_state = await client.put(path, json={"state": "dancing"})
        destroy = await client.request("DELETE", path, json={})
        again = await client.request("DELETE", path, json={})
        gone = await client.get(path)
        not_a_number = await client.get("/api/v0/instances/abc/")
    assert relabel.json() == stop.json() == {"success": True}
    assert stopped["label"] == "renamed" and stopped["actual_status"] == "stopped"
    assert bad_state.status_code == 400
    assert destroy.json() == {"success": True}
    assert again.status_code == 404 and again.json()["error"] == "no_such_instance"
    assert gone.json() == {"instances": None}
    assert not_a_number.status_code == 400


async def test_logs_are_fetched_in_two_steps_without_auth(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client, onstart="python3 -m http.server")
        await vast_sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        requested = await client.put(f"/api/v0/instances/request_logs/{instance_id}/", json={})
    url = requested.json()["result_url"]
    assert url.startswith(f"{vast_sim.url}/_sim/logs/")
    async with httpx.AsyncClient() as anonymous:
        first = await anonymous.get(url)
        second = await anonymous.get(url)
    assert first.status_code == 404
    assert second.status_code == 200
    assert second.headers["content-type"].startswith("text/plain")
    assert "Pull complete" in second.text and "python3 -m http.server" in second.text


# ---------------------------------------------------------------------------------------------
# Rate limits


async def test_real_rate_limits_answer_429_per_endpoint_and_key(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory(rate_limits="real")
    ids = [o["id"] for o in sim.offers()[:4]]
    async with api(sim) as client, api(sim, key="other") as other:
        first = await create(client, ids[0])
        too_soon = await create(client, ids[1])
        other_key = await create(other, ids[1])
        await trio.sleep(4.5)
        later = await create(client, ids[2])
        searches = [(await client.post("/api/v0/bundles/", json={})).status_code for _ in range(4)]
    assert (first.status_code, too_soon.status_code) == (200, 429)
    assert too_soon.json() == {
        "success": False,
        "error": "rate_limit_exceeded",
        "msg": "API requests too frequent endpoint threshold=4.5",
    }
    assert "retry-after" not in too_soon.headers
    assert other_key.status_code == later.status_code == 200
    assert searches == [200, 200, 200, 429]  # search allows a burst of three
    assert sim.stats()["PUT /api/v0/asks/{id}/ 429"] == 1


# ---------------------------------------------------------------------------------------------
# Faults


async def test_request_faults_429_5xx_and_latency(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory(faults=Faults(rate_429=1.0))
    async with api(sim) as client:
        limited = await client.get("/api/v1/instances/")
        sim.set_faults(rate_429=0.0, rate_5xx=1.0)
        broken = await client.get("/api/v1/instances/")
        sim.set_faults(
            rate_5xx=0.0, latency=3.0
        )  # under httpx's 5 s timeout, which runs on the same clock
        start = trio.current_time()
        slow = await client.get("/api/v1/instances/")
        elapsed = trio.current_time() - start
    assert limited.status_code == 429
    assert broken.status_code in (500, 502, 503)
    assert slow.status_code == 200 and elapsed >= 3.0
    assert sim.created == 0


async def test_offer_taken_between_search_and_buy(vast_sim: VastSim) -> None:
    vast_sim.set_faults(offer_taken=1.0)
    async with api(vast_sim) as client:
        [offer] = await search(client, {"limit": 1})
        response = await create(client, offer["id"])
        after = await search(client, {"id": {"eq": offer["id"]}})
    assert response.status_code == 404 and response.json()["error"] == "no_such_ask"
    assert after == [] and vast_sim.ledger() == []


async def test_a_lost_create_response_still_creates_the_instance(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        response = await client.post("/_sim/faults", json={"lose_create_response": 1.0})
        assert response.json()["lose_create_response"] == 1.0
        offer_id = vast_sim.offers()[0]["id"]
        lost = await create(client, offer_id, label="vk-lost")
        retried = await create(client, offer_id, label="vk-lost")
        found = await client.get(
            "/api/v1/instances/", params={"select_filters": '{"label": {"eq": "vk-lost"}}'}
        )
    assert lost.status_code == 502
    assert retried.status_code == 404  # the offer was bought by the lost call
    assert found.json()["total_instances"] == 1


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        pytest.param("stuck_loading", "loading", "Pull complete", id="stuck-loading"),
        pytest.param("oci_failure", "created", "OCI runtime create failed", id="oci"),
        pytest.param("host_offline", "offline", "offline", id="host-offline"),
        pytest.param("instance_exit", "exited", "exited with code 1", id="exit"),
    ],
)
async def test_instance_faults(
    vast_sim_factory: VastSimFactory,
    jump_clock: trio.testing.MockClock,
    fault: str,
    status: str,
    message: str,
) -> None:
    sim = await vast_sim_factory(boot_seconds=10, faults=Faults(**{fault: 1.0}))
    async with api(sim) as client:
        instance_id = await buy(sim, client)
    await trio.sleep(100)  # long after a healthy instance would be running
    instance = sim.instance(instance_id)
    assert instance is not None
    assert instance["actual_status"] == status
    assert message in instance["status_msg"]


async def test_targeted_faults_through_the_python_api(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        exiting, dropping = await buy(vast_sim, client), await buy(vast_sim, client)
    await vast_sim.wait_until(lambda s: status_of(s, dropping) == "running")
    vast_sim.exit_instance(exiting, code=137)
    vast_sim.set_offline(dropping)
    assert status_of(vast_sim, exiting) == "exited"
    assert "code 137" in (vast_sim.instance(exiting) or {})["status_msg"]
    assert status_of(vast_sim, dropping) == "offline"


async def test_an_outbid_instance_stops_keeps_billing_storage_and_resumes(
    vast_sim: VastSim,
) -> None:
    offer = min(vast_sim.offers(), key=lambda o: o["dph_base"])
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client, price=offer["min_bid"])
        await vast_sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        refused = await client.post("/_sim/faults", json={"outbid": instance_id + 1})
        assert refused.status_code == 400  # no such instance
        await client.post("/_sim/faults", json={"outbid": instance_id})
        stopped = vast_sim.instance(instance_id)
        assert stopped is not None
        assert (stopped["actual_status"], stopped["intended_status"]) == ("stopped", "running")
        assert stopped["cur_state"] == "stopped"
        assert "outbid" in stopped["status_msg"]
        assert stopped["storage_total_cost"] > 0  # its disk still bills
        assert stopped["min_bid"] == round(offer["min_bid"] * 1.2, 4)  # the going rate
        await client.post("/_sim/faults", json={"resume": instance_id})
        await vast_sim.wait_until(lambda s: status_of(s, instance_id) == "running")


async def test_a_bid_at_the_going_rate_resumes_an_outbid_instance(vast_sim: VastSim) -> None:
    offer = min(vast_sim.offers(), key=lambda o: o["dph_base"])
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client, price=offer["min_bid"])
        on_demand = await buy(vast_sim, client)
        vast_sim.outbid(instance_id, price=0.5)

        async def bid(instance: int, price: object) -> httpx.Response:
            body = {"client_id": "me", "price": price}
            return await client.put(f"/api/v0/instances/bid_price/{instance}/", json=body)

        assert (await bid(on_demand, 0.5)).status_code == 400  # not interruptible
        assert (await bid(instance_id, offer["min_bid"] / 2)).status_code == 400  # below floor
        assert (await bid(instance_id, 0.4)).json() == {"success": True}
        assert status_of(vast_sim, instance_id) == "stopped"  # still outbid
        assert (await bid(instance_id, 0.5)).json() == {"success": True}
        shown = vast_sim.instance(instance_id)
        assert shown is not None
        assert shown["actual_status"] != "stopped"  # booting again
        assert shown["dph_total"] == pytest.approx(0.5 + shown["storage_total_cost"])
        await vast_sim.wait_until(lambda s: status_of(s, instance_id) == "running")


async def test_bad_fault_settings_are_refused(vast_sim: VastSim) -> None:
    async with api(vast_sim) as client:
        response = await client.post("/_sim/faults", json={"no_such_fault": 1})
    assert response.status_code == 400
    assert vast_sim.faults == Faults()


# ---------------------------------------------------------------------------------------------
# Ledger, stats, waiting, command line


async def test_ledger_bills_by_the_hour_and_stats_count_calls(
    vast_sim: VastSim, jump_clock: trio.testing.MockClock
) -> None:
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client, label="billed")
        await trio.sleep(1800)
        await client.request("DELETE", f"/api/v0/instances/{instance_id}/", json={})
        await client.get(f"/api/v0/instances/{instance_id}/")
        ledger = (await client.get("/_sim/ledger")).json()
        stats = (await client.get("/_sim/stats")).json()
    [entry] = ledger
    assert entry["id"] == instance_id and entry["label"] == "billed"
    assert entry["destroyed_at"] - entry["created_at"] == pytest.approx(1800, abs=1)
    assert entry["cost"] == pytest.approx(entry["dph_total"] / 2, rel=1e-3)
    assert stats == {
        "PUT /api/v0/asks/{id}/": 1,
        "DELETE /api/v0/instances/{id}/": 1,
        "GET /api/v0/instances/{id}/": 1,
    }
    assert vast_sim.live_instances() == []


async def test_create_requests_are_served_as_sent(vast_sim: VastSim) -> None:
    # The chaos soak runs the simulator as a process and reads this to prove that no Secret
    # value reached Vast; not counted in the stats (it is no API call of the node's).
    async with api(vast_sim) as client:
        await buy(vast_sim, client, label="sent", env={"PLAIN": "value"})
        served = (await client.get("/_sim/create-requests")).json()
        stats = (await client.get("/_sim/stats")).json()
    assert served == vast_sim.create_requests()
    assert served[0]["label"] == "sent" and served[0]["env"] == {"PLAIN": "value"}
    assert stats == {"PUT /api/v0/asks/{id}/": 1}


async def test_wait_until_wakes_on_changes_from_other_tasks(
    vast_sim: VastSim, nursery: trio.Nursery
) -> None:
    woke = trio.Event()

    async def waiter() -> None:
        await vast_sim.wait_until(lambda s: s.destroyed == 1)
        woke.set()

    nursery.start_soon(waiter)
    async with api(vast_sim) as client:
        instance_id = await buy(vast_sim, client)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        await client.request("DELETE", f"/api/v0/instances/{instance_id}/", json={})
    with trio.fail_after(5):
        await woke.wait()


def test_command_line_flags_become_a_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--seed", "3", "--boot-seconds", "0.5", "--rate-limits", "0.01", "--api-key", "k",
         "--faults", '{"oci_failure": 0.25}']
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.seed, config.boot_seconds, config.rate_limits, config.api_key) == (
        3, 0.5, "0.01", "k",
    )  # fmt: skip
    assert config.faults == Faults(oci_failure=0.25)
    with pytest.raises(ValueError):
        config_from_args(parser.parse_args(["--rate-limits", "sometimes"]))


async def test_offers_file_replaces_the_seeded_market(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    real = VastSim().offers()[:2]
    path = tmp_path / "offers.json"
    path.write_text(json.dumps({"offers": [{**real[0], "id": 111}, {**real[1], "id": 222}]}))
    sim = await vast_sim_factory(offers_path=str(path))
    async with api(sim) as client:
        offers = await search(client, {"order": [["id", "asc"]]})
    assert [o["id"] for o in offers] == [111, 222]


async def test_main_prints_the_url_and_serves(tmp_path: Path) -> None:
    script = (
        "import argparse, sys\n"
        "from vk_trio.devtools.sim import vast\n"
        "parser = argparse.ArgumentParser()\n"
        "vast.add_arguments(parser)\n"
        "sys.exit(vast.main(parser.parse_args(sys.argv[1:])))\n"
    )
    command = [sys.executable, "-c", script, "--listen", "127.0.0.1:0", "--log-level", "ERROR"]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process, command, stdout=subprocess.PIPE, check=False, cwd=REPO_ROOT
            )
        )
        assert process.stdout is not None
        with trio.fail_after(20):
            url = (await process.stdout.receive_some(200)).decode().strip()
        async with httpx.AsyncClient() as client:
            names = await client.get(f"{url}/api/v0/gpu_names/unique/")
        process.terminate()
    assert url.startswith("http://127.0.0.1:")
    assert "RTX 3060" in names.json()["gpu_names"]
