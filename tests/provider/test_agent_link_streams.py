"""The node's side of exec, attach and port-forward: how link failures and refusals reach
the caller (the happy paths run against the real agent in tests/agent/)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.agent.harness import NODE, SECRET, start_agent
from vk_trio.agent.link import FrameStream, agent_credentials, agent_keys, server_context
from vk_trio.agent.protocol import Accepted, Chunk, Exit, Output, StreamFrame
from vk_trio.provider import agent_link
from vk_trio.provider.agent_link import (
    AgentLink,
    AgentRefused,
    AgentUnreachable,
    ProcessExit,
    ProcessOutput,
)

Script = Callable[[FrameStream], Awaitable[None]]


async def _fake_agent(nursery: trio.Nursery, script: Script) -> AgentLink:
    """A TLS server with the pod's agent key that reads the request and runs ``script``."""
    context = server_context(agent_keys(agent_credentials(SECRET)))

    async def handle(tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, context, server_side=True)
        frames = FrameStream(tls)
        await frames.receive_request()
        await script(frames)
        await trio.aclose_forcefully(tls)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return AgentLink(NODE, "127.0.0.1", listeners[0].socket.getsockname()[1])


def _sends(*frames: StreamFrame) -> Script:
    async def script(link: FrameStream) -> None:
        for frame in frames:
            await link.send(frame)

    return script


async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = AgentLink(NODE, "127.0.0.1", port)
    with pytest.raises(AgentUnreachable):
        async with link.exec("app", ["true"]):
            pass
    with pytest.raises(AgentUnreachable):
        async with link.port_forward(80):
            pass


async def test_an_agent_without_its_pod_refuses(nursery: trio.Nursery, tmp_path: Path) -> None:
    agent = await start_agent(nursery, tmp_path)
    for stream in (agent.link().exec("app", ["true"]), agent.link().port_forward(80)):
        with pytest.raises(AgentRefused) as refused:
            async with stream:
                pass
        assert refused.value.reason == "NotStarted"


async def test_output_then_a_dropped_link_is_unreachable(nursery: trio.Nursery) -> None:
    link = await _fake_agent(nursery, _sends(Accepted(), Output(stream="stderr", data=b"x")))
    async with link.exec("app", ["true"]) as ex:
        assert await ex.receive() == ProcessOutput("stderr", b"x")
        with pytest.raises(AgentUnreachable):
            await ex.receive()


async def test_the_exit_stays_the_answer(nursery: trio.Nursery) -> None:
    link = await _fake_agent(nursery, _sends(Accepted(), Exit(code=2, message="m")))
    async with link.attach("app") as attached:
        assert await attached.receive() == ProcessExit(2, "m")
        assert await attached.receive() == ProcessExit(2, "m")
        assert attached.exit == ProcessExit(2, "m")


async def test_a_forwarded_port_reads_in_pieces_and_breaks_as_unreachable(
    nursery: trio.Nursery,
) -> None:
    link = await _fake_agent(nursery, _sends(Accepted(), Chunk(data=b"abcdef")))
    async with link.port_forward(80) as forwarded:
        assert await forwarded.receive_some(4) == b"abcd"
        assert await forwarded.receive_some() == b"ef"
        with pytest.raises(AgentUnreachable):
            await forwarded.receive_some()


async def test_an_agent_that_never_accepts(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_link, "CONNECT_TIMEOUT", 1.0)

    async def silent(_frames: FrameStream) -> None:
        await trio.sleep_forever()

    link = await _fake_agent(nursery, silent)
    with pytest.raises(AgentUnreachable, match="did not answer"):
        async with link.port_forward(80):
            pass
