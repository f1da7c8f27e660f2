"""The simulator's bill and the account's credit, as Vast bills (vast-api.md §5.5, §7):
GPU by the second while ``running``, storage while the instance exists (loading and stopped
bill storage only); the credit billed down, set through ``/_sim/faults``, shown by
``users/current``; an account out of credit has its instances stopped and creates refused
with ``missing_billing``; ``/api/v0/charges/`` gives the bill per instance.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.devtools.sim.vast.test_server import api
from tests.plugins.vast_sim import VastSimFactory

Json = Any
GPU = 0.36  # $/h for the GPU
DISK = 20.0  # GB: at $0.36/GB/month, $0.01/h of storage
STORAGE = 0.36 * DISK / 720.0


@pytest.fixture
def jump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.005)


async def _buy(client: httpx.AsyncClient, offer_id: int) -> int:
    body = {"image": "busybox", "disk": DISK, "label": "bill"}
    created = await client.put(f"/api/v0/asks/{offer_id}/", json=body)
    assert created.status_code == 200, created.text
    return int(created.json()["new_contract"])


async def _ledger(client: httpx.AsyncClient, instance_id: int) -> Json:
    rows = (await client.get("/_sim/ledger")).json()
    return next(row for row in rows if row["id"] == instance_id)


async def test_gpu_bills_only_while_running_and_storage_while_it_exists(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory(boot_seconds=60.0)
    [offer_id] = sim.add_offers([{"dph_base": GPU, "storage_cost": 0.36}])
    async with api(sim) as client:
        instance_id = await _buy(client, offer_id)
        await trio.sleep(60.0 + 600.0)  # a minute of boot (storage only), ten running
        running = await _ledger(client, instance_id)
        await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
        await trio.sleep(3600.0)  # stopped: storage only
        stopped = await _ledger(client, instance_id)
        await client.request("DELETE", f"/api/v0/instances/{instance_id}/", json={})
        await trio.sleep(3600.0)  # destroyed: nothing
        destroyed = await _ledger(client, instance_id)
    assert running["gpu_seconds"] == pytest.approx(600.0, abs=0.1)
    assert running["cost"] == pytest.approx((GPU * 600 + STORAGE * 660) / 3600, rel=1e-3)
    assert stopped["cost"] == pytest.approx(running["cost"] + STORAGE, rel=1e-3)
    assert destroyed["cost"] == stopped["cost"]


async def test_credit_is_billed_down_and_running_out_stops_instances_and_creates(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory()
    first, second = sim.add_offers([{"dph_base": GPU}, {"dph_base": GPU}])
    async with api(sim) as client:
        set_credit = await client.post("/_sim/faults", json={"credit": 1.0})
        assert set_credit.status_code == 200
        instance_id = await _buy(client, first)
        await trio.sleep(1800.0)
        user = (await client.get("/api/v0/users/current")).json()
        bill = (await _ledger(client, instance_id))["cost"]
        assert user["credit"] == pytest.approx(1.0 - bill, abs=1e-5)
        await trio.sleep(3 * 3600.0)  # $1 at $0.37/h runs out
        shown = (await client.get(f"/api/v0/instances/{instance_id}/")).json()["instances"]
        refused = await client.put(f"/api/v0/asks/{second}/", json={"image": "busybox"})
        restart = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
        assert (await client.get("/api/v0/users/current")).json()["credit"] <= 0
        await client.post("/_sim/faults", json={"credit": 50.0})
        again = await client.put(f"/api/v0/asks/{second}/", json={"image": "busybox"})
    assert shown["actual_status"] == "stopped"
    for answer in (refused, restart):
        assert answer.status_code == 400
        assert answer.json()["error"] == "missing_billing"
    assert again.status_code == 200


async def test_charges_endpoint_gives_the_bill_per_instance(
    vast_sim_factory: VastSimFactory, jump_clock: trio.testing.MockClock
) -> None:
    sim = await vast_sim_factory()
    ids = sim.add_offers([{"dph_base": GPU}, {"dph_base": GPU}])
    async with api(sim) as client:
        bought = [await _buy(client, offer_id) for offer_id in ids]
        await trio.sleep(600.0)
        window = '{"day": {"gte": 0, "lte": 99999999999}}'
        first = (
            await client.get("/api/v0/charges/", params={"select_filters": window, "limit": "1"})
        ).json()
        rest = (
            await client.get(
                "/api/v0/charges/",
                params={"select_filters": window, "after_token": first["next_token"]},
            )
        ).json()
        ledger = {row["id"]: row["cost"] for row in (await client.get("/_sim/ledger")).json()}
    results = first["results"] + rest["results"]
    assert first["total"] == 2 and rest["next_token"] is None
    assert [r["source"] for r in results] == [f"instance-{i}" for i in bought]
    for result in results:
        instance_id = int(result["source"].removeprefix("instance-"))
        assert result["amount"] == pytest.approx(ledger[instance_id])
        assert sum(item["amount"] for item in result["items"]) == pytest.approx(result["amount"])
        assert [item["type"] for item in result["items"]] == ["gpu", "storage"]
