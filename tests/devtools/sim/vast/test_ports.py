"""The Vast simulator's ``serve_ports`` mode: each running instance really answers on its
mapped ports at 127.0.0.1, as the workload on a rented machine would (refused before it
runs, 503 while the app loads, 200 after, 500 under the ``app_unhealthy`` fault, refused
again once destroyed). Only loopback traffic.
"""

from __future__ import annotations

import argparse

import httpx
import pytest
import trio
import trio.testing

from tests.devtools.sim.vast.test_server import api, buy, status_of
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import VastSim, add_arguments, config_from_args


@pytest.fixture
def jump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def endpoint(sim: VastSim, instance_id: int, spec: str = "8000/tcp") -> tuple[str, int]:
    row = sim.instance(instance_id)
    assert row is not None and row["ports"], row
    return row["public_ipaddr"].strip(), int(row["ports"][spec][0]["HostPort"])


async def answer(host: str, port: int, path: str = "/") -> int | str:
    """The status a GET gets, or ``refused``."""
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{host}:{port}{path}")
    except httpx.ConnectError:
        return "refused"
    return response.status_code


async def test_a_running_instance_answers_on_its_mapped_ports(
    jump_clock: trio.testing.MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(serve_ports=True, app_ready_after=30.0, boot_seconds=10.0)
    async with api(sim) as client:
        instance_id = await buy(sim, client, env={"-p 8000:8000": "1", "-p 53:53/udp": "1"})
        row = sim.instance(instance_id)
        assert row is not None and row["ports"] is None  # not running: no mapping shown
        await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        host, port = endpoint(sim, instance_id)
        assert host == "127.0.0.1"
        ssh_host, ssh_port = endpoint(sim, instance_id, "22/tcp")
        assert ssh_port != port
        assert await answer(host, port, "/healthz") == 503  # the model is loading
        await trio.sleep(30)
        assert await answer(host, port, "/healthz") == 200
        assert await answer(host, port, "/any/path") == 200
        faults = await client.post("/_sim/faults", json={"app_unhealthy": instance_id})
        assert faults.status_code == 200 and sim.unhealthy_apps == {instance_id}
        assert await answer(host, port) == 500
        assert (await client.delete(f"/api/v0/instances/{instance_id}/")).status_code == 200
        await trio.sleep(1)
        assert await answer(host, port) == "refused"
        assert await answer(ssh_host, ssh_port) == "refused"


async def test_ports_are_refused_until_running_and_while_stopped(
    jump_clock: trio.testing.MockClock, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory(serve_ports=True, boot_seconds=10.0)
    async with api(sim) as client:
        instance_id = await buy(sim, client, env={"-p 8000:8000": "1"})
        port = int(sim._instances[instance_id].ports["8000/tcp"][0]["HostPort"])
        assert await answer("127.0.0.1", port) == "refused"
        await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        assert await answer("127.0.0.1", port) == 200
        stop = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
        assert stop.status_code == 200
        await trio.sleep(1)
        assert await answer("127.0.0.1", port) == "refused"
        start = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
        assert start.status_code == 200
        await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        assert await answer("127.0.0.1", port) == 200  # the same port again


def test_cli_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--serve-ports", "--app-ready-after", "12"]))
    assert config.serve_ports and config.app_ready_after == 12.0
    assert not config_from_args(parser.parse_args([])).serve_ports
