"""``kubectl attach`` over the real link: the main process's output fans out to the log
files and to attached clients, and attached clients write to its stdin."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent.attach import CLIENT_QUEUE
from vk_trio.agent.protocol import Chunk, Logs, Start
from vk_trio.provider.agent_link import AgentRefused, ProcessExit, ProcessOutput


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


async def _logs(agent: Agent) -> bytes:
    answers = await agent.ask(Logs(container="app"))
    return b"".join(a.data for a in answers if isinstance(a, Chunk))


async def test_attached_clients_write_stdin_and_read_output(agent: Agent) -> None:
    script = 'while read line; do echo "got $line"; echo "err $line" >&2; done; echo bye; exit 4'
    spec = sh("app", script, stdin=True, stdin_once=True)
    await agent.ask(Start(bundle=bundle(spec, restart_policy="Never")))
    await agent.watch_until(lambda s: s.container.state == "running")
    out = {"stdout": b"", "stderr": b""}
    with trio.fail_after(10):
        async with agent.link().attach("app", stdin=True) as attached:
            await attached.write(b"one\n")
            while b"got one\n" not in out["stdout"]:
                piece = await attached.receive()
                assert isinstance(piece, ProcessOutput)
                out[piece.stream] += piece.data
            await attached.close_input()  # stdin_once: the process's stdin closes
            while isinstance(piece := await attached.receive(), ProcessOutput):
                out[piece.stream] += piece.data
    assert piece == ProcessExit(4)
    assert out == {"stdout": b"got one\nbye\n", "stderr": b"err one\n"}
    # the logs have it all too; stdout and stderr are read apart, so only each one's own
    # order is certain, as with a kubelet's log
    logged = (await _logs(agent)).splitlines()
    assert sorted(logged) == [b"bye", b"err one", b"got one"]
    assert logged.index(b"got one") < logged.index(b"bye")


async def test_a_slow_client_loses_output_but_nothing_waits(agent: Agent, tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 4000000 /dev/zero; echo; echo done"
    await agent.ask(Start(bundle=bundle(sh("app", script), restart_policy="Never")))
    await agent.watch_until(lambda s: s.container.state == "running")
    async with agent.link().attach("app") as attached:
        container = agent.runner.container("app")
        assert container is not None and container.stdio is not None
        (client,) = container.stdio.clients
        go.touch()
        await agent.watch_until(lambda s: s.finished)  # the process did not wait for us
        assert client.queued_peak <= CLIENT_QUEUE
        assert client.dropped > 0
        received = 0
        while isinstance(piece := await attached.receive(), ProcessOutput):
            received += len(piece.data)
    assert piece == ProcessExit(0)
    assert received + client.dropped == 4_000_000 + len(b"\ndone\n")
    assert (await _logs(agent)).endswith(b"\ndone\n")


async def test_attach_needs_a_running_container(agent: Agent) -> None:
    await agent.ask(Start(bundle=bundle(sh("app", "exit 0"), restart_policy="Never")))
    await agent.watch_until(lambda s: s.finished)
    with pytest.raises(AgentRefused) as refused:
        async with agent.link().attach("app"):
            pass
    assert refused.value.reason == "NotRunning"
