"""Instance logs through ``VastClient.request_logs`` against the simulator: they grow while
the instance runs, and the two faults the real upload has (a slow one, a missing one) end as
they do there: late, or in a ``VastUnavailable`` after the bounded polls.

Time is trio's ``MockClock`` with a small autojump threshold (real sockets), so "runs for a
minute" takes no real minute.
"""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import Faults, VastSim
from vk_trio.vast import CreateInstance, Pacer, VastClient, VastUnavailable
from vk_trio.vast.client import LOG_POLL_TRIES


@pytest.fixture
def jumpy_clock() -> MockClock:
    return MockClock(autojump_threshold=0.01)


async def running_instance(sim: VastSim, client: VastClient) -> int:
    offer = min(sim.offers(), key=lambda o: o["dph_base"])
    created = await client.create_instance(
        offer["id"],
        CreateInstance(image="vllm/vllm-openai:v0.6.3", disk=20, label="vk-logs-1"),
    )
    await sim.wait_until(
        lambda s: (s.instance(created.instance_id) or {}).get("actual_status") == "running"
    )
    return created.instance_id


async def test_logs_grow_while_the_instance_runs(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(log_interval=10.0)
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as client:
        instance_id = await running_instance(sim, client)
        first = (await client.request_logs(instance_id)).splitlines()
        await trio.sleep(60)
        later = (await client.request_logs(instance_id)).splitlines()
    assert later[: len(first)] == first  # the old lines stay, new ones follow
    added = later[len(first) :]
    assert len(added) >= 5
    assert all("vllm/vllm-openai:v0.6.3" in line for line in added)
    assert added[-1].startswith("[vk-logs-1] vllm/vllm-openai:v0.6.3: step ")


async def test_a_slow_upload_is_waited_for(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(faults=Faults(logs_slow=1.0))
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as client:
        instance_id = await running_instance(sim, client)
        started = trio.current_time()
        logs = await client.request_logs(instance_id)
    assert "Pulling image vllm/vllm-openai:v0.6.3" in logs
    assert trio.current_time() - started > 5  # twenty 404s, polled every 0.3 s


async def test_a_missing_upload_ends_in_a_clear_error_after_bounded_polls(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(faults=Faults(logs_missing=1.0))
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as client:
        instance_id = await running_instance(sim, client)
        before = sim.stats().get("GET /_sim/logs/{token}.log", 0)
        with pytest.raises(VastUnavailable, match=f"not uploaded after {LOG_POLL_TRIES} tries"):
            await client.request_logs(instance_id)
    assert sim.stats()["GET /_sim/logs/{token}.log"] - before == LOG_POLL_TRIES
