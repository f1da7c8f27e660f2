"""The link on a real socket with real TLS: who is refused, and what each request answers."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from tests.agent.harness import NODE, Agent, bundle, sh, start_agent
from vk_trio.agent.link import ALPN, FrameStream, LinkKeys, node_keys, pod_secret
from vk_trio.agent.protocol import (
    Accepted,
    End,
    Failed,
    GetUsage,
    Logs,
    Restart,
    Start,
    UpdateVolume,
    UsageReport,
    Volume,
)

OTHER = node_keys(pod_secret(b"master", "uid-2"))


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> Agent:
    return await start_agent(nursery, tmp_path)


async def _no_answer(agent: Agent, context: ssl.SSLContext) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", agent.port)
    tls = trio.SSLStream(tcp, context, server_hostname="vk-trio-agent")
    frames = FrameStream(tls)
    with pytest.raises(trio.BrokenResourceError):
        await tls.do_handshake()
        await frames.send(GetUsage())
        answer = await frames.receive_answer()
        assert answer is None
        raise trio.BrokenResourceError("closed without an answer")


async def test_a_client_without_a_certificate_is_refused(agent: Agent) -> None:
    context = ssl.create_default_context(cadata=NODE.peer_cert.decode())
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN])
    await _no_answer(agent, context)
    assert agent.server.refused == 1


async def test_another_pods_node_key_is_refused(agent: Agent) -> None:
    impostor = LinkKeys(own_key=OTHER.own_key, own_cert=OTHER.own_cert, peer_cert=NODE.peer_cert)
    with pytest.raises(trio.BrokenResourceError):
        frames = await agent.connect(impostor)
        await frames.send(GetUsage())
        assert await frames.receive_answer() is None
        raise trio.BrokenResourceError("closed without an answer")
    assert agent.server.refused == 1


async def test_a_node_pinning_another_agent_fails_its_handshake(agent: Agent) -> None:
    wrong_pin = LinkKeys(own_key=NODE.own_key, own_cert=NODE.own_cert, peer_cert=OTHER.peer_cert)
    with pytest.raises(trio.BrokenResourceError) as caught:
        await agent.connect(wrong_pin)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


class _Recording(trio.abc.Stream):
    """A TCP stream that keeps what the client sent."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_replayed_handshake_gets_nothing(agent: Agent) -> None:
    from vk_trio.agent.link import client_context

    recording = _Recording(await trio.open_tcp_stream("127.0.0.1", agent.port))
    tls = trio.SSLStream(recording, client_context(NODE), server_hostname="vk-trio-agent")
    frames = FrameStream(tls)
    await frames.send(GetUsage())
    assert isinstance(await frames.receive_answer(), UsageReport)
    await tls.aclose()
    assert agent.server.refused == 0

    replay = await trio.open_tcp_stream("127.0.0.1", agent.port)
    await replay.send_all(bytes(recording.sent))
    received = b""
    with trio.fail_after(5):
        while data := await replay.receive_some():
            received += data
    await replay.aclose()
    assert agent.server.refused == 1
    assert agent.server.accepted == 1  # only the good client's connection


async def test_requests_before_start(agent: Agent) -> None:
    assert isinstance((await agent.ask(GetUsage()))[0], UsageReport)
    for request in (
        Restart(message="x"),
        Logs(container="main"),
        UpdateVolume(volume=Volume(name="v")),
    ):
        [answer] = await agent.ask(request)
        assert isinstance(answer, Failed)
        assert answer.reason == "NotStarted"


async def test_start_is_idempotent_and_one_pod_only(agent: Agent) -> None:
    pod = bundle(sh("main", "sleep 30"))
    assert await agent.ask(Start(bundle=pod)) == [Accepted(started=True)]
    assert await agent.ask(Start(bundle=pod)) == [Accepted(started=False)]
    other = Start(bundle=pod.__class__(pod_uid="uid-2", container=pod.container))
    [answer] = await agent.ask(other)
    assert isinstance(answer, Failed)
    assert answer.reason == "OtherPod"


async def test_logs_of_an_unknown_container(agent: Agent) -> None:
    await agent.ask(Start(bundle=bundle(sh("main", "echo hi"), restart_policy="Never")))
    [answer] = await agent.ask(Logs(container="nope"))
    assert isinstance(answer, Failed)
    assert answer.reason == "NotFound"
    answers = await agent.ask(Logs(container="main", previous=True))
    assert isinstance(answers[0], Failed | End)
