"""The Vast simulator's ``run_containers`` mode: each instance's process really runs, in a
rootless sandbox (``unshare``), with its output as the log, its exit as ``exited``, its
mapped ports forwarded in, and only the simulator reachable from inside. Real clock, real
processes, loopback only.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.devtools.sim.vast.test_server import api, buy, status_of
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.vast import VastSim, VastSimConfig, add_arguments, config_from_args
from vk_trio.devtools.sim.vast.containers import container_argv, container_env
from vk_trio.devtools.sim.vast.sandbox import LAUNCHER, unshare_command

pytestmark = pytest.mark.skipif(
    unshare_command() is None, reason="needs util-linux unshare (apt-get install util-linux)"
)

FAST: dict[str, Any] = {"run_containers": True, "boot_seconds": 0.05, "rate_limits": "off"}
PYTHON = "/usr/bin/python3"
PORT = {"-p 8000:8000": "1"}


async def containers_sim(factory: VastSimFactory, **fields: Any) -> VastSim:
    sim = await factory(**{**FAST, **fields})
    assert sim.runs_containers, sim._sandbox_problem
    return sim


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (10 s at most) for a condition outside the simulator's state: processes."""
    with trio.fail_after(10):
        while True:
            if check():
                return
            await trio.sleep(0.02)


async def logs(client: httpx.AsyncClient, instance_id: int) -> str:
    response = await client.put(f"/api/v0/instances/request_logs/{instance_id}/", json={})
    url = response.json()["result_url"]
    while (fetched := await client.get(url)).status_code == 404:  # the "upload" takes a poll
        pass
    return fetched.text


async def exited(sim: VastSim, instance_id: int) -> dict[str, Any]:
    with trio.fail_after(10):
        await sim.wait_until(lambda s: status_of(s, instance_id) == "exited")
    row = sim.instance(instance_id)
    assert row is not None
    return row


def marker(seconds: int) -> str:
    """A ``sleep`` argument no other process on the machine has: whole seconds, and a
    fraction drawn for this run (``sleep`` takes fractions, and the pids are found by it)."""
    return f"{seconds}.{random.randrange(10**8):08d}"


def pids_running(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and marker.encode() in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


async def test_output_is_the_log_and_the_exit_code_the_status(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await containers_sim(vast_sim_factory)
    async with api(sim) as client:
        instance_id = await buy(
            sim, client, onstart="sh", args=["-c", "echo hello; echo oops >&2; exit 3"]
        )
        row = await exited(sim, instance_id)
        assert row["status_msg"] == "Container exited with code 3"
        assert row["ports"] is None
        text = await logs(client, instance_id)
        assert text.splitlines() == ["hello", "oops"]


async def test_root_is_writable_the_image_read_only_and_env_and_hostname_set(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await containers_sim(vast_sim_factory)
    script = (
        "echo conf > /etc/app.conf && cat /etc/app.conf; "
        "mkdir /data && echo x > /data/x && cat /data/x; "
        "touch /usr/nope 2>/dev/null || echo usr read-only; "
        'echo "greeting=$GREETING home=$HOME"; hostname; echo "HOSTNAME=$HOSTNAME"; '
        'echo "path=$PATH"; env | grep -c -- "^-p" || true'
    )
    async with api(sim) as client:
        instance_id = await buy(
            sim,
            client,
            onstart="sh",
            args=["-c", script],
            env={"GREETING": "hi", "-p 8000:8000": "1"},
        )
        row = await exited(sim, instance_id)
        assert row["status_msg"] == "Container exited with code 0", await logs(client, instance_id)
        assert (await logs(client, instance_id)).splitlines() == [
            "conf",
            "x",
            "usr read-only",
            "greeting=hi home=/root",
            f"C.{instance_id}",
            f"HOSTNAME=C.{instance_id}",
            "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "0",
        ]


async def test_two_instances_listen_on_the_same_port_behind_their_own_host_ports(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await containers_sim(vast_sim_factory)
    async with api(sim) as client:
        ids = [
            await buy(
                sim,
                client,
                onstart="sh",
                args=["-c", f"cd /tmp && echo {name} > who && exec {PYTHON} -m http.server 8000"],
                env={"-p 8000:8000": "1"},
            )
            for name in ("first", "second")
        ]
        with trio.fail_after(10):
            await sim.wait_until(lambda s: all(status_of(s, i) == "running" for i in ids))
        answers = []
        for instance_id in ids:
            row = sim.instance(instance_id)
            assert row is not None and row["public_ipaddr"].strip() == "127.0.0.1"
            port = int(row["ports"]["8000/tcp"][0]["HostPort"])
            answers.append(await get_when_listening(f"http://127.0.0.1:{port}/who"))
        assert answers == ["first\n", "second\n"]


async def get_when_listening(url: str) -> str:
    """GET ``url`` once the server inside listens (a refused forward closes at once)."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(10):
            while True:
                try:
                    response = await client.get(url)
                except httpx.TransportError:
                    await trio.sleep(0.02)
                    continue
                assert response.status_code == 200
                return response.text


async def test_inside_only_the_simulator_is_reachable(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    served = tmp_path / "agent.bin"
    served.write_bytes(b"\x7fELF pretend agent")
    sim = await containers_sim(vast_sim_factory, serve_files={"/files/agent": str(served)})
    sim.serve_file("/files/other", served)
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen()
    assert sim.url is not None
    fetch = (
        "import sys, urllib.request\n"
        "base = sys.argv[1]\n"
        "print(urllib.request.urlopen(base + '/files/agent').read().decode())\n"
        "print(urllib.request.urlopen(base + '/files/other').status)\n"
        "try:\n"
        "    urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[2]}/', timeout=3)\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    async with api(sim) as client:
        instance_id = await buy(
            sim, client, onstart=PYTHON, args=["-c", fetch, sim.url, str(outside.getsockname()[1])]
        )
        row = await exited(sim, instance_id)
        text = await logs(client, instance_id)
        assert row["status_msg"] == "Container exited with code 0", text
        assert text.splitlines() == ["\x7fELF pretend agent", "200", "refused URLError"]
    outside.close()


def sandbox_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("vk-sim-*"))


async def test_destroy_and_shutdown_leave_no_process(vast_sim_factory: VastSimFactory) -> None:
    dirs_before = sandbox_dirs()
    sim = await containers_sim(vast_sim_factory)
    first, second, third = marker(1001), marker(1002), marker(1003)
    async with api(sim) as client:
        instance_id = await buy(sim, client, onstart="sleep", args=[first])
        with trio.fail_after(10):
            await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        await eventually(lambda: bool(pids_running(first)))
        assert (await client.delete(f"/api/v0/instances/{instance_id}/")).status_code == 200
        await eventually(lambda: not pids_running(first))

    async with trio.open_nursery() as nursery:
        other = VastSim(VastSimConfig(**FAST))
        await nursery.start(other.serve)
        async with api(other) as client:
            for seconds in (second, third):
                await buy(other, client, onstart="sh", args=["-c", f"sleep {seconds}; :"])
            with trio.fail_after(10):
                await other.wait_until(
                    lambda s: all(status_of(s, i) == "running" for i in s._instances)
                )
        await eventually(lambda: bool(pids_running(second) and pids_running(third)))
        nursery.cancel_scope.cancel()
    # the kernel ends a pid namespace's processes as its init dies: a moment, not at once
    await eventually(lambda: not pids_running(second) and not pids_running(third))
    await eventually(lambda: not pids_running(str(LAUNCHER)))
    assert sandbox_dirs() == dirs_before


async def test_stop_kills_the_process_and_start_runs_it_again(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await containers_sim(vast_sim_factory)
    async with api(sim) as client:
        fourth = marker(1004)
        instance_id = await buy(
            sim, client, onstart="sh", args=["-c", f"echo boot; sleep {fourth}"]
        )
        await eventually(lambda: bool(pids_running(fourth)))
        stop = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
        assert stop.status_code == 200
        await eventually(lambda: not pids_running(fourth))
        assert status_of(sim, instance_id) == "stopped"
        start = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
        assert start.status_code == 200
        with trio.fail_after(10):
            await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        await eventually(lambda: bool(pids_running(fourth)))
        assert (await logs(client, instance_id)).splitlines() == ["boot", "boot"]


async def test_a_command_that_is_not_there_is_an_oci_failure(
    vast_sim_factory: VastSimFactory,
) -> None:
    sim = await containers_sim(vast_sim_factory)
    async with api(sim) as client:
        missing = await buy(sim, client, onstart="no-such-command", args=["x"])
        nothing = await buy(sim, client)
        with trio.fail_after(10):
            await sim.wait_until(
                lambda s: all(
                    "OCI runtime create failed" in str((s.instance(i) or {})["status_msg"])
                    for i in (missing, nothing)
                )
            )
        row = sim.instance(missing)
        assert row is not None and '"no-such-command"' in row["status_msg"]
        assert status_of(sim, nothing) == "created"


def test_argv_env_and_flags() -> None:
    assert container_argv({"onstart": "sh", "args": ["-c", "x"]}) == ["sh", "-c", "x"]
    assert container_argv({"args": ["run", 1]}) == ["run", "1"]
    assert container_argv({}) == []
    env = container_env({"env": {"-p 8000:8000": "1", "-e X=1": "1", "A": 2}}, "C.7")
    assert env == {"PATH": env["PATH"], "HOME": "/root", "A": "2", "HOSTNAME": "C.7"}
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--run-containers", "--serve-file", "agent=/bin/true", "--serve-file", "/b=/x"]
    config = config_from_args(parser.parse_args(args))
    assert config.run_containers
    assert config.serve_files == {"/agent": "/bin/true", "/b": "/x"}
    with pytest.raises(ValueError, match="URLPATH=FILE"):
        config_from_args(parser.parse_args(["--serve-file", "/agent"]))


async def test_without_unshare_it_says_so_and_serves_the_fake_app(
    vast_sim_factory: VastSimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vk_trio.devtools.sim.vast.sandbox.shutil.which", lambda _: None)
    sim = await vast_sim_factory(**FAST)
    assert not sim.runs_containers
    assert sim._sandbox_problem and "apt-get install util-linux" in sim._sandbox_problem
    async with api(sim) as client:
        instance_id = await buy(sim, client, onstart="sh", args=["-c", "exit 3"], env=PORT)
        with trio.fail_after(10):
            await sim.wait_until(lambda s: status_of(s, instance_id) == "running")
        row = sim.instance(instance_id)
        assert row is not None
        port = row["ports"]["8000/tcp"][0]["HostPort"]
        assert await get_when_listening(f"http://127.0.0.1:{port}/") == "ok"
