"""The pod's processes as the kubelet runs them, with real processes, over the real link.

The crash back-off's base is 0.2 s here (the kubelet's 10 s in production), so that the
back-off messages read ``back-off 200ms``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent.protocol import (
    Accepted,
    Chunk,
    End,
    ExecProbe,
    Logs,
    Mount,
    PodState,
    ProcessSpec,
    Restart,
    Start,
    Volume,
)
from vk_trio.logs import scrub


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


SHARED = [Mount(volume="shared", path="/shared")]


def _init_then_fail(agent: Agent, policy: str) -> Start:
    shared = agent.root / "shared"
    return Start(
        bundle=bundle(
            sh("main", f"cat {shared}/greeting; exit 3", mounts=SHARED),
            init_containers=[sh("init", f"echo hello > {shared}/greeting", mounts=SHARED)],
            volumes=[Volume(name="shared")],
            restart_policy=policy,
        )
    )


async def _logs(agent: Agent, container: str, **options: object) -> bytes:
    answers = await agent.ask(Logs(container=container, **options))  # type: ignore[arg-type]
    assert isinstance(answers[-1], End), answers
    return b"".join(a.data for a in answers if isinstance(a, Chunk))


async def test_init_container_then_a_crashing_container(agent: Agent) -> None:
    assert await agent.ask(_init_then_fail(agent, "Always")) == [Accepted(started=True)]

    state = await agent.watch_until(lambda s: s.container.reason == "CrashLoopBackOff")
    [init] = state.init_containers
    assert init.state == "terminated"
    assert init.terminated is not None
    assert (init.terminated.exit_code, init.terminated.reason) == (0, "Completed")
    assert state.initialized and not state.finished
    main = state.container
    assert main.last_terminated is not None
    assert (main.last_terminated.exit_code, main.last_terminated.reason) == (3, "Error")
    assert main.last_terminated.started_at and main.last_terminated.finished_at.endswith("Z")
    # The kubelet restarts at once the first time, then backs off: 1 restart so far.
    assert main.restart_count == 1
    assert main.message == "back-off 200ms restarting failed container=main pod=uid-1"

    state = await agent.watch_until(lambda s: s.container.restart_count >= 3)
    assert "back-off 400ms" in state.container.message or state.container.state != "waiting"
    # the run before the current one (the current may be starting, with nothing printed yet)
    assert await _logs(agent, "main", previous=True) == b"hello\n"


async def test_never_finishes_the_pod(agent: Agent) -> None:
    await agent.ask(_init_then_fail(agent, "Never"))
    state = await agent.watch_until(lambda s: s.finished)
    main = state.container
    assert main.state == "terminated" and main.restart_count == 0
    assert main.terminated is not None and main.terminated.exit_code == 3


async def test_a_failing_init_container_with_never_fails_the_pod(agent: Agent) -> None:
    pod = bundle(sh("main", "true"), init_containers=[sh("init", "exit 1")], restart_policy="Never")
    await agent.ask(Start(bundle=pod))
    state = await agent.watch_until(lambda s: s.finished)
    assert state.init_containers[0].terminated is not None
    assert state.init_containers[0].terminated.exit_code == 1
    assert not state.initialized
    assert state.container.state == "waiting" and state.container.reason == "PodInitializing"


async def test_second_start_does_not_restart_but_restart_does(agent: Agent) -> None:
    pod = bundle(sh("main", "sleep 30"), termination_grace=5)
    await agent.ask(Start(bundle=pod))
    first = await agent.watch_until(lambda s: s.container.state == "running")
    assert await agent.ask(Start(bundle=pod)) == [Accepted(started=False)]
    state, _ = agent.runner.board.current()
    assert state.container.started_at == first.container.started_at
    assert state.container.restart_count == 0

    assert await agent.ask(Restart(message="Liveness probe failed: HTTP 500")) == [Accepted()]
    state = await agent.watch_until(
        lambda s: s.container.restart_count == 1 and s.container.state == "running"
    )
    last = state.container.last_terminated
    assert last is not None
    assert (last.exit_code, last.signal, last.reason) == (143, 15, "Error")
    assert last.message == "Liveness probe failed: HTTP 500"


async def test_missing_executable_is_a_start_error(agent: Agent) -> None:
    spec = ProcessSpec(name="main", argv=["no-such-program", "x"])
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert terminated.message == 'exec: "no-such-program": executable file not found in $PATH'


async def test_watch_sees_an_exit_within_a_second(agent: Agent, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    script = f"while [ ! -e {flag} ]; do sleep 0.02; done; exit 0"
    await agent.ask(Start(bundle=bundle(sh("main", script), restart_policy="Never")))
    frames = await agent.connect()
    from vk_trio.agent.protocol import Watch

    async with frames.stream:
        await frames.send(Watch(heartbeat=30))
        with trio.fail_after(5):
            while True:
                state = await frames.receive_answer()
                assert isinstance(state, PodState)
                if state.container.state == "running":
                    break
        flag.touch()
        exited = trio.current_time()
        with trio.fail_after(5):
            while True:
                state = await frames.receive_answer()
                assert isinstance(state, PodState)
                if state.container.state == "terminated":
                    break
        assert trio.current_time() - exited < 1.0
        assert state.finished


async def test_liveness_probe_failure_restarts(agent: Agent, tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    alive.touch()
    probe = ExecProbe(
        kind="liveness", command=["test", "-e", str(alive)], period=0.1, failure_threshold=2
    )
    pod = bundle(sh("main", "sleep 30", probes=[probe]), termination_grace=5)
    await agent.ask(Start(bundle=pod))
    await agent.watch_until(lambda s: s.container.state == "running")
    await trio.sleep(0.4)
    assert agent.runner.board.current()[0].container.restart_count == 0
    alive.unlink()
    state = await agent.watch_until(lambda s: s.container.restart_count == 1)
    last = state.container.last_terminated
    assert last is not None and last.reason == "Error" and last.exit_code in (137, 143)
    assert last.message.startswith("Liveness probe failed")


async def test_readiness_probe_drives_ready(agent: Agent, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    probe = ExecProbe(
        kind="readiness", command=["sh", "-c", f"test -e {ready}"], period=0.1, failure_threshold=1
    )
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", probes=[probe]))))
    state = await agent.watch_until(lambda s: s.container.state == "running")
    assert state.container.ready is False
    ready.touch()
    await agent.watch_until(lambda s: s.container.ready is True)
    ready.unlink()
    await agent.watch_until(lambda s: s.container.ready is False)


async def test_startup_probe_gates_started(agent: Agent, tmp_path: Path) -> None:
    up = tmp_path / "up"
    probes = [
        ExecProbe(
            kind="startup", command=["test", "-e", str(up)], period=0.1, failure_threshold=100
        ),
        ExecProbe(kind="readiness", command=["true"], period=0.1),
    ]
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", probes=probes))))
    state = await agent.watch_until(lambda s: s.container.state == "running")
    assert (state.container.started, state.container.ready) == (False, False)
    await trio.sleep(0.3)
    assert agent.runner.board.current()[0].container.ready is False
    up.touch()
    state = await agent.watch_until(lambda s: s.container.ready is True)
    assert state.container.started is True


async def test_a_probe_that_times_out_fails(agent: Agent) -> None:
    probe = ExecProbe(
        kind="liveness", command=["sleep", "5"], timeout=0.2, period=0.1, failure_threshold=1
    )
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", probes=[probe]))))
    state = await agent.watch_until(lambda s: s.container.restart_count == 1)
    last = state.container.last_terminated
    assert last is not None
    assert last.message == "Liveness probe failed: command timed out after 0.2s"


async def test_the_pods_secret_values_never_reach_the_agents_log(agent: Agent) -> None:
    """The agent's own lines are the instance's log, which Vast keeps."""
    secret = "s3cr3t-agent-value"
    spec = sh("app", "exec sleep 30")
    await agent.ask(Start(bundle=bundle(spec, secret_values=[secret])))
    assert scrub(f"token={secret}") == "token=***"
