"""``kubectl exec`` over the real link: real processes in the container's world, real TLS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent import exec as exec_module
from vk_trio.agent.exec import CHUNK, ExecSession
from vk_trio.agent.protocol import Start, StreamFrame
from vk_trio.provider.agent_link import (
    AgentRefused,
    ProcessExit,
    ProcessOutput,
    ProcessStream,
)


async def _running(agent: Agent, tmp_path: Path, **fields: object) -> Path:
    """The pod's container runs ``sleep`` in ``work`` with ``FOO=bar``."""
    work = tmp_path / "work"
    spec = sh("app", "exec sleep 1000", env=[("FOO", "bar")], working_dir=str(work), **fields)
    await agent.ask(Start(bundle=bundle(spec)))
    await agent.watch_until(lambda s: s.container.state == "running")
    return work


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


async def _collect(stream: ProcessStream, limit: float = 10.0) -> tuple[bytes, bytes, ProcessExit]:
    out = {"stdout": b"", "stderr": b""}
    with trio.fail_after(limit):
        while isinstance(piece := await stream.receive(), ProcessOutput):
            out[piece.stream] += piece.data
    return out["stdout"], out["stderr"], piece


async def test_output_on_both_streams_and_the_exit_code(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["sh", "-c", "echo out; echo err >&2; exit 3"]) as ex:
        stdout, stderr, exit = await _collect(ex)
    assert (stdout, stderr, exit.code) == (b"out\n", b"err\n", 3)
    assert await ex.receive() == exit  # the exit again, not a hang


async def test_stdin_reaches_the_process_and_its_end_ends_it(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["cat"], stdin=True) as ex:
        await ex.write(b"hi")
        await ex.close_input()
        stdout, stderr, exit = await _collect(ex)
    assert (stdout, stderr, exit) == (b"hi", b"", ProcessExit(0))


async def test_a_signalled_process_exits_128_plus_the_signal(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["sh", "-c", "kill -9 $$"]) as ex:
        assert (await _collect(ex))[2].code == 137


async def test_a_terminal_with_its_size_and_a_resize(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    command = ["sh", "-c", "stty size; read x; stty size; test -t 0 && echo tty $TERM"]
    link = agent.link()
    async with link.exec("app", command, tty=True, stdin=True, width=80, height=24) as ex:
        first = await ex.receive()
        assert isinstance(first, ProcessOutput) and first.data == b"24 80\r\n"
        await ex.resize(120, 40)
        await ex.write(b"go\n")
        stdout, stderr, exit = await _collect(ex)
    assert exit.code == 0 and stderr == b""
    assert b"40 120\r\n" in stdout and b"tty xterm" in stdout


async def test_end_of_input_on_a_terminal_is_eot(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["cat"], tty=True, stdin=True) as ex:
        await ex.write(b"hello\n")
        await ex.close_input()
        stdout, _stderr, exit = await _collect(ex)
    assert exit.code == 0 and stdout.count(b"hello") == 2  # the terminal's echo, then cat's


async def test_a_command_that_does_not_exist(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["no-such-command"]) as ex:
        exit = await ex.receive()
    assert exit == ProcessExit(127, 'exec: "no-such-command": executable file not found in $PATH')
    async with agent.link().exec("app", ["/etc/hostname"]) as ex:
        exit = await ex.receive()
    assert isinstance(exit, ProcessExit) and exit.code == 126, exit


async def test_the_containers_env_and_directory(agent: Agent, tmp_path: Path) -> None:
    work = await _running(agent, tmp_path)
    os.environ["AGENT_ONLY"] = "secret"
    try:
        command = ["sh", "-c", 'echo "$FOO $PWD ${AGENT_ONLY:-none} $PATH"']
        async with agent.link().exec("app", command) as ex:
            stdout, _stderr, _exit = await _collect(ex)
    finally:
        del os.environ["AGENT_ONLY"]
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert stdout.decode() == f"bar {work} none {path}\n"


async def test_a_client_that_hangs_up_kills_the_process(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["sh", "-c", "echo $$; exec sleep 1000"]) as ex:
        first = await ex.receive()
        assert isinstance(first, ProcessOutput)
        pid = int(first.data)
        os.kill(pid, 0)
    with trio.fail_after(5):
        while agent.server.exec_sessions:  # noqa: ASYNC110 (the agent's set: no event to wait on)
            await trio.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie


async def test_exec_needs_a_running_container(agent: Agent, tmp_path: Path) -> None:
    await agent.ask(Start(bundle=bundle(sh("app", "exit 0"), restart_policy="Never")))
    await agent.watch_until(lambda s: s.finished)
    with pytest.raises(AgentRefused) as refused:
        async with agent.link().exec("app", ["true"]):
            pass
    assert (refused.value.reason, str(refused.value)) == (
        "NotRunning",
        'container not found ("app")',
    )
    with pytest.raises(AgentRefused) as refused:
        async with agent.link().exec("other", ["true"]):
            pass
    assert refused.value.reason == "NotFound"


async def test_output_waits_for_a_node_that_does_not_read(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["head", "-c", "200000000", "/dev/zero"]) as ex:
        await trio.sleep(1.5)  # not reading
        (session,) = agent.server.exec_sessions
        assert session.process.returncode is None  # its writes wait on the link
        assert session.peak_pending <= CHUNK
        read = 0
        while read < 1_000_000:
            piece = await ex.receive()
            assert isinstance(piece, ProcessOutput) and len(piece.data) <= CHUNK
            read += len(piece.data)
    assert session.peak_pending <= CHUNK


async def test_a_slow_link_gets_all_output_after_the_exit(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain limit is for a background child holding the pipe, not for a link that takes
    the output slowly: the last pipeful, read after the exit, still arrives in full (it was
    cut off once, 50 busy sessions at once, and the exit said 0)."""
    monkeypatch.setattr(exec_module, "DRAIN", 0.2)
    send = ExecSession._send

    async def slowly(session: ExecSession, frame: StreamFrame) -> None:
        await trio.sleep(0.1)  # the pipe's last 64 KiB take 0.2 s or more after the exit
        await send(session, frame)

    monkeypatch.setattr(ExecSession, "_send", slowly)
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["head", "-c", "300000", "/dev/zero"]) as ex:
        stdout, _, exit = await _collect(ex)
    assert (len(stdout), exit) == (300_000, ProcessExit(0))


async def test_a_background_child_holding_the_pipe_does_not_hold_the_exit(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_module, "DRAIN", 0.2)
    await _running(agent, tmp_path)
    async with agent.link().exec("app", ["sh", "-c", "echo hi; sleep 30 & exit 4"]) as ex:
        stdout, _, exit = await _collect(ex, limit=5)
    assert (stdout, exit.code) == (b"hi\n", 4)


@pytest.mark.skipif(os.geteuid() != 0, reason="another user needs a root agent")
async def test_the_containers_user_and_their_terminal(agent: Agent, tmp_path: Path) -> None:
    await _running(agent, tmp_path, user="65534:65534")
    command = ["sh", "-c", "id -u; id -g; stat -c %u $(tty)"]
    async with agent.link().exec("app", command, tty=True) as ex:
        stdout, _stderr, exit = await _collect(ex)
    assert (stdout, exit.code) == (b"65534\r\n65534\r\n65534\r\n", 0)
