"""Lifecycle hooks, termination messages, the ``Stop`` request and the container events,
as the agent runs them: real processes under the real runner, through the link."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent.protocol import (
    Accepted,
    Chunk,
    End,
    Hook,
    HttpHook,
    Logs,
    PodState,
    Start,
    Stop,
)


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


async def _logs(agent: Agent, container: str = "main") -> bytes:
    answers = await agent.ask(Logs(container=container))
    assert isinstance(answers[-1], End), answers
    return b"".join(a.data for a in answers if isinstance(a, Chunk))


def _reasons(state: PodState) -> list[str]:
    return [event.reason for event in state.events]


def _message_path(tmp_path: Path) -> str:
    return str(tmp_path / "dev" / "termination-log")


async def test_post_start_runs_before_the_container_counts_as_running(
    agent: Agent, tmp_path: Path
) -> None:
    ready = tmp_path / "hook-ran"
    hook = Hook(exec=["sh", "-c", f"sleep 0.5; echo from-hook > {ready}"])
    spec = sh("main", f"cat {ready} 2>/dev/null || echo missing; sleep 30", post_start=hook)
    await agent.ask(Start(bundle=bundle(spec, pod_name="web", pod_namespace="ns")))
    state = await agent.watch_until(lambda s: bool(s.events))
    assert state.container.state == "waiting"  # started, but the hook has not returned
    assert state.container.reason == "ContainerCreating"
    state = await agent.watch_until(lambda s: s.container.state == "running")
    assert ready.exists()
    assert _reasons(state)[:2] == ["Created", "Started"]
    assert [e.message for e in state.events[:2]] == [
        "Created container: main",
        "Started container main",
    ]
    await agent.ask(Stop(grace=1))


async def test_a_failing_post_start_hook_kills_the_run_and_says_why(agent: Agent) -> None:
    hook = Hook(exec=["sh", "-c", "echo no luck; exit 3"])
    spec = sh("main", "sleep 30", post_start=hook)
    pod = bundle(spec, pod_name="web", pod_namespace="ns", restart_policy="Never")
    await agent.ask(Start(bundle=pod))
    state = await agent.watch_until(lambda s: s.finished)
    failed = next(e for e in state.events if e.reason == "FailedPostStartHook")
    assert failed.type == "Warning" and failed.container == "main" and not failed.init
    assert failed.message == (
        'Exec lifecycle hook ([sh -c echo no luck; exit 3]) for Container "main" in Pod '
        "\"web_ns(uid-1)\" failed - error: command 'sh -c echo no luck; exit 3' exited with 3: "
        'no luck\n, message: "no luck\\n"'
    )
    assert "Killing" in _reasons(state)
    terminated = state.container.terminated
    assert terminated is not None and terminated.exit_code == 143
    assert state.container.started_at is None


async def test_a_failing_post_start_hook_restarts_under_the_policy(agent: Agent) -> None:
    hook = Hook(exec=["false"])
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", post_start=hook))))
    state = await agent.watch_until(lambda s: s.container.restart_count >= 1, limit=15)
    assert _reasons(state).count("FailedPostStartHook") >= 1
    await agent.ask(Stop(grace=1))


async def _answer_http(seen: list[bytes], stream: trio.SocketStream) -> None:
    request = await stream.receive_some(65536)
    seen.append(bytes(request))
    await stream.send_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await stream.aclose()


async def test_an_http_post_start_hook_asks_the_containers_address(
    agent: Agent, nursery: trio.Nursery
) -> None:
    seen: list[bytes] = []
    [listener] = await nursery.start(
        partial(trio.serve_tcp, partial(_answer_http, seen), 0, host="127.0.0.1")
    )
    port = listener.socket.getsockname()[1]
    hook = Hook(http=HttpHook(port=port, path="/warm", headers=[("X-Hook", "yes")]))
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", post_start=hook))))
    state = await agent.watch_until(lambda s: s.container.state == "running")
    assert "FailedPostStartHook" not in _reasons(state)  # any answer is a success
    [request] = seen
    assert request.startswith(b"GET /warm HTTP/1.1")
    assert b"x-hook: yes" in request.lower()
    assert b"user-agent: kube-lifecycle/" in request.lower()
    await agent.ask(Stop(grace=1))


async def test_an_http_hook_nobody_answers_fails(agent: Agent) -> None:
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    hook = Hook(http=HttpHook(port=port, path="/warm"))
    spec = sh("main", "sleep 30", post_start=hook)
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    failed = next(e for e in state.events if e.reason == "FailedPostStartHook")
    assert failed.message.startswith('HTTP lifecycle hook (/warm) for Container "main" in Pod')
    assert f'Get "http://127.0.0.1:{port}/warm"' in failed.message


async def test_stop_runs_pre_stop_before_the_signal(agent: Agent, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    script = (
        f"trap 'echo term after $(cat {checkpoint}); exit 0' TERM; "
        "echo up; while true; do sleep 0.05; done"
    )
    hook = Hook(exec=["sh", "-c", f"echo saved > {checkpoint}"])
    await agent.ask(Start(bundle=bundle(sh("main", script, pre_stop=hook))))
    await agent.watch_until(lambda s: s.container.state == "running")
    with trio.fail_after(5):
        assert await agent.ask(Stop(grace=10)) == [Accepted()]
    state, _ = agent.runner.board.current()
    assert state.finished and state.container.state == "terminated"
    assert b"term after saved" in await _logs(agent)
    killing = [e for e in state.events if e.reason == "Killing"]
    assert [e.message for e in killing] == ["Stopping container main"]


async def test_pre_stop_counts_against_the_grace_period(agent: Agent) -> None:
    hook = Hook(exec=["sleep", "30"])
    script = "trap '' TERM; while true; do sleep 0.05; done"  # ignores SIGTERM
    await agent.ask(Start(bundle=bundle(sh("main", script, pre_stop=hook))))
    await agent.watch_until(lambda s: s.container.state == "running")
    began = trio.current_time()
    assert await agent.ask(Stop(grace=1)) == [Accepted()]
    # the hook had 1 s, then SIGTERM, then SIGKILL after what is left (at least min(1, 2) s)
    assert 1.5 < trio.current_time() - began < 4
    terminated = agent.runner.board.current()[0].container.terminated
    assert terminated is not None and terminated.exit_code == 137


async def test_a_failing_pre_stop_hook_is_said_and_the_stop_goes_on(agent: Agent) -> None:
    hook = Hook(exec=["sh", "-c", "exit 7"])
    await agent.ask(Start(bundle=bundle(sh("main", "sleep 30", pre_stop=hook))))
    await agent.watch_until(lambda s: s.container.state == "running")
    assert await agent.ask(Stop(grace=5)) == [Accepted()]
    state, _ = agent.runner.board.current()
    assert "FailedPreStopHook" in _reasons(state)
    assert state.container.state == "terminated"


async def test_the_termination_message_file(agent: Agent, tmp_path: Path) -> None:
    path = _message_path(tmp_path)
    spec = sh(
        "main",
        f"test -f {path} && test ! -s {path} && printf 'disk full' > {path}; exit 1",
        termination_message_path=path,
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None
    assert (terminated.exit_code, terminated.message) == (1, "disk full")
    assert (await trio.Path(path).stat()).st_mode & 0o777 == 0o666


async def test_a_long_termination_message_is_cut_at_4_kib(agent: Agent, tmp_path: Path) -> None:
    path = _message_path(tmp_path)
    spec = sh(
        "main", f"head -c 5000 /dev/zero | tr '\\0' x > {path}", termination_message_path=path
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None and terminated.message == "x" * 4096


async def test_fallback_to_logs_on_error(agent: Agent, tmp_path: Path) -> None:
    spec = sh(
        "main",
        "i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; exit 2",
        termination_message_path=_message_path(tmp_path),
        termination_message_policy="FallbackToLogsOnError",
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None
    lines = terminated.message.splitlines()
    assert len(lines) == 80 and lines[0] == "line 20" and lines[-1] == "line 99"


async def test_fallback_keeps_the_last_2_kib(agent: Agent, tmp_path: Path) -> None:
    spec = sh(
        "main",
        "i=0; while [ $i -lt 60 ]; do printf '%0100d\\n' $i; i=$((i+1)); done; exit 2",
        termination_message_path=_message_path(tmp_path),
        termination_message_policy="FallbackToLogsOnError",
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None
    assert len(terminated.message.encode()) == 2048
    assert terminated.message.endswith("59\n")


async def test_no_fallback_for_a_success(agent: Agent, tmp_path: Path) -> None:
    spec = sh(
        "main",
        "echo all good",
        termination_message_path=_message_path(tmp_path),
        termination_message_policy="FallbackToLogsOnError",
    )
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    state = await agent.watch_until(lambda s: s.finished)
    terminated = state.container.terminated
    assert terminated is not None and terminated.message == ""


async def test_back_off_is_an_event(agent: Agent) -> None:
    pod = bundle(sh("main", "exit 1"), pod_name="web", pod_namespace="ns")
    await agent.ask(Start(bundle=pod))
    state = await agent.watch_until(lambda s: "BackOff" in _reasons(s))
    back_off = next(e for e in state.events if e.reason == "BackOff")
    assert back_off.type == "Warning"
    assert back_off.message == "Back-off restarting failed container main in pod web_ns(uid-1)"
    seqs = [e.seq for e in state.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await agent.ask(Stop(grace=1))
