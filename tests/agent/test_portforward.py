"""``kubectl port-forward`` over the real link to a real server on the instance's loopback
(the agent runs on the test's host, so the host's 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import socket
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.agent.harness import Agent, bundle, sh, start_agent
from vk_trio.agent.protocol import Start
from vk_trio.provider.agent_link import AgentRefused, ForwardedPort


async def _echo(stream: trio.SocketStream) -> None:
    """Echo until the client's end, then end too."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    agent = await start_agent(nursery, tmp_path)
    await agent.ask(Start(bundle=bundle(sh("app", "exec sleep 1000"))))
    return agent


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def _read_all(stream: ForwardedPort) -> bytes:
    data = b""
    while piece := await stream.receive_some(65536):
        data += piece
    return data


async def test_bytes_go_both_ways_and_a_half_close_gets_the_rest(
    agent: Agent, echo_port: int
) -> None:
    async with agent.link().port_forward(echo_port) as forwarded:
        await forwarded.send_all(b"hello ")
        await forwarded.send_all(b"world")
        await forwarded.send_eof()
        with trio.fail_after(5):
            assert await _read_all(forwarded) == b"hello world"


async def test_twenty_connections_at_once(agent: Agent, echo_port: int) -> None:
    answers: dict[int, bytes] = {}

    async def one(number: int) -> None:
        async with agent.link().port_forward(echo_port) as forwarded:
            await forwarded.send_all(f"connection {number}".encode())
            await forwarded.send_eof()
            answers[number] = await _read_all(forwarded)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for number in range(20):
                nursery.start_soon(one, number)
    assert answers == {n: f"connection {n}".encode() for n in range(20)}


async def test_ten_megabytes_arrive_intact(agent: Agent, echo_port: int) -> None:
    payload = os.urandom(10 * 1024 * 1024)
    received = hashlib.sha256()
    size = 0

    async def send(forwarded: ForwardedPort) -> None:
        for start in range(0, len(payload), 100_000):
            await forwarded.send_all(payload[start : start + 100_000])
        await forwarded.send_eof()

    with trio.fail_after(60):
        async with agent.link().port_forward(echo_port) as forwarded, trio.open_nursery() as tasks:
            tasks.start_soon(send, forwarded)
            while piece := await forwarded.receive_some(1000):
                received.update(piece)
                size += len(piece)
    assert size == len(payload)
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_a_refused_port(agent: Agent) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    with pytest.raises(AgentRefused) as refused:
        async with agent.link().port_forward(port):
            pass
    assert refused.value.reason == "ConnectionRefused"
    message = str(refused.value)
    assert message.startswith(f"error forwarding port {port} to pod uid-1: dial tcp4 127.0.0.1")
    assert message.endswith("connect: connection refused")


async def test_a_node_that_hangs_up_closes_the_ports_connection(
    agent: Agent, nursery: trio.Nursery
) -> None:
    closed = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        async with stream:
            assert await stream.receive_some(100) == b"x"
            assert await stream.receive_some(100) == b""
        closed.set()

    listeners = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
    async with agent.link().port_forward(listeners[0].socket.getsockname()[1]) as forwarded:
        await forwarded.send_all(b"x")
    with trio.fail_after(5):
        await closed.wait()
