"""What a container's process is started with (env, user, directory), the agent's own end
(SIGTERM, eviction), the PID-1 reaper, and the kubelet's back-off numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent.backoff import CrashBackoff, go_duration
from vk_trio.agent.children import Children
from vk_trio.agent.launch import DEFAULT_PATH
from vk_trio.agent.protocol import Chunk, Logs, Mount, ProcessSpec, Start, Volume

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


async def _output(agent: Agent, container: str = "main") -> str:
    answers = await agent.ask(Logs(container=container))
    return b"".join(a.data for a in answers if isinstance(a, Chunk)).decode()


async def test_env_is_the_specs_with_docker_defaults(agent: Agent, tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="main",
        argv=["/usr/bin/env"],
        env=[("GREETING", "hi there"), ("EMPTY", "")],
        working_dir=str(tmp_path / "work"),
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    await agent.watch_until(lambda s: s.finished)
    lines = sorted((await _output(agent)).splitlines())
    assert lines == sorted(["GREETING=hi there", "EMPTY=", f"PATH={DEFAULT_PATH}", "HOME=/root"])
    assert (tmp_path / "work").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_runs_as_the_specs_user(agent: Agent) -> None:
    spec = sh("main", 'echo "$(id -u):$(id -g) $HOME"', user="65534")
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    assert state.container.terminated is not None
    assert state.container.terminated.exit_code == 0
    assert (await _output(agent)).startswith("65534:")


async def test_an_unknown_user_name_is_a_start_error(agent: Agent) -> None:
    spec = sh("main", "true", user="no-such-user")
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None and terminated.reason == "StartError"
    assert "no-such-user" in terminated.message


async def test_an_empty_dir_over_its_limit_evicts_the_pod(agent: Agent) -> None:
    data = agent.root / "data"
    spec = sh(
        "main",
        f"head -c 4096 /dev/zero > {data}/big; sleep 30",
        mounts=[Mount(volume="data", path="/data")],
    )
    pod = bundle(spec, volumes=[Volume(name="data", size_limit=1024)], termination_grace=5)
    await agent.ask(Start(bundle=pod))
    state = await agent.watch_until(lambda s: s.finished)
    assert state.reason == "Evicted"
    assert 'EmptyDir volume "data" exceeds the limit' in state.message
    assert state.container.state == "terminated"


async def test_sigterm_stops_the_process_and_the_agent(tmp_path: Path) -> None:
    ended = trio.Event()

    async def run(task_status: trio.TaskStatus[Agent]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(await start_agent(nursery, tmp_path))
        ended.set()

    async with trio.open_nursery() as outer:
        agent = await outer.start(run)
        spec = sh("main", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done")
        await agent.ask(Start(bundle=bundle(spec, termination_grace=5)))
        await agent.watch_until(lambda s: s.container.state == "running")
        await trio.sleep(0.1)  # the shell has set its trap
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            await ended.wait()
    state, _ = agent.runner.board.current()
    assert state.finished
    assert state.container.terminated is not None
    assert state.container.terminated.exit_code == 0


def test_without_credentials_the_agent_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "vk_trio", "agent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "VK_TRIO_LINK is not set" in line


def test_the_reaper_reaps_orphans_but_not_ours() -> None:
    children = Children()
    orphan = subprocess.Popen(["true"])
    time.sleep(0.2)
    assert children.reap_once() == 0  # a zombie for less than a round: maybe trio's
    assert children.reap_once() == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(orphan.pid, os.WNOHANG)
    orphan.returncode = 0  # reaped by the reaper: Popen must not try again

    ours = subprocess.Popen(["sh", "-c", "exit 7"])
    children.add(ours.pid)
    time.sleep(0.2)
    assert children.reap_once() == 0
    assert children.reap_once() == 0
    assert ours.wait() == 7


def test_the_kubelets_back_off() -> None:
    backoff = CrashBackoff()
    assert [backoff.delay(1) for _ in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff.delay(600) == 0  # a run of 10 minutes resets it
    assert backoff.delay(1) == 10
    assert [go_duration(s) for s in (0.2, 10, 20, 160, 300, 3725)] == [
        "200ms",
        "10s",
        "20s",
        "2m40s",
        "5m0s",
        "1h2m5s",
    ]


async def test_orphan_reaping_only_as_pid_1() -> None:
    from vk_trio.agent.children import reap_orphans

    with trio.fail_after(1):
        await reap_orphans(Children())  # not PID 1: returns at once


def test_an_agent_that_is_not_root_runs_no_one_else(monkeypatch: pytest.MonkeyPatch) -> None:
    from vk_trio.agent import launch

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    with pytest.raises(launch.LaunchError, match="the agent does not run as root"):
        launch._resolve_identity("65534")
    assert launch._resolve_identity("1000:1000") is None  # itself: nothing to switch
