"""The agent in the test's own trio loop, on 127.0.0.1 port 0, and a node-side client.

``agent_under_test`` runs the real ``run_agent`` (runner, link server, reaper) with its root
and state in ``tmp_path``; only the crash back-off's base is shortened (0.2 s instead of
10 s) and the handshake timeout (1 s), so that the tests take seconds, not minutes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from vk_trio.agent.app import run_agent
from vk_trio.agent.link import (
    FrameStream,
    LinkKeys,
    agent_credentials,
    client_context,
    node_keys,
    pod_secret,
)
from vk_trio.agent.protocol import (
    Answer,
    Bundle,
    ContainerState,
    PodState,
    ProcessSpec,
    Request,
    Watch,
)
from vk_trio.agent.runner import Runner
from vk_trio.agent.server import LinkServer
from vk_trio.agent.settings import settings_from_env
from vk_trio.agent.volumes import Volumes
from vk_trio.provider.agent_link import AgentLink

SECRET = pod_secret(b"master", "uid-1")
NODE = node_keys(SECRET)


@dataclass
class Agent:
    port: int
    runner: Runner
    server: LinkServer
    root: Path

    async def connect(self, keys: LinkKeys = NODE) -> FrameStream:
        tcp = await trio.open_tcp_stream("127.0.0.1", self.port)
        tls = trio.SSLStream(tcp, client_context(keys), server_hostname="vk-trio-agent")
        await tls.do_handshake()
        return FrameStream(tls)

    def link(self) -> AgentLink:
        """The node's client for this agent (exec, attach, port-forward)."""
        return AgentLink(NODE, "127.0.0.1", self.port)

    async def ask(self, request: Request) -> list[Answer]:
        """Send one request; every answer until the agent closes."""
        frames = await self.connect()
        answers: list[Answer] = []
        async with frames.stream:
            await frames.send(request)
            while (answer := await frames.receive_answer()) is not None:
                answers.append(answer)
        return answers

    async def watch_until(
        self, condition: Callable[[PodState], bool], limit: float = 10.0
    ) -> PodState:
        """The first watched state that meets ``condition``."""
        frames = await self.connect()
        async with frames.stream:
            await frames.send(Watch(heartbeat=1.0))
            with trio.fail_after(limit):
                while True:
                    answer = await frames.receive_answer()
                    assert isinstance(answer, PodState), answer
                    if condition(answer):
                        return answer


async def start_agent(nursery: trio.Nursery, tmp_path: Path, backoff_base: float = 0.2) -> Agent:
    env = {
        "VK_TRIO_LINK": agent_credentials(SECRET),
        "VK_TRIO_AGENT_PORT": "0",
        "VK_TRIO_AGENT_DIR": str(tmp_path / "state"),
        "VK_TRIO_AGENT_ROOT": str(tmp_path / "root"),
    }
    settings = dataclasses.replace(settings_from_env(env), host="127.0.0.1", handshake_timeout=1.0)
    runner = Runner(
        Volumes(settings.root, settings.state_dir / "volumes"),
        settings.state_dir / "logs",
        backoff_base=backoff_base,
        eviction_interval=0.2,
    )
    server = await nursery.start(partial(run_agent, settings, runner))
    return Agent(server.port, runner, server, settings.root)


def sh(name: str, script: str, **fields: object) -> ProcessSpec:
    return ProcessSpec(name=name, argv=["sh", "-c", script], **fields)  # type: ignore[arg-type]


def bundle(container: ProcessSpec, **fields: object) -> Bundle:
    return Bundle(pod_uid="uid-1", container=container, **fields)  # type: ignore[arg-type]


def main_of(state: PodState) -> ContainerState:
    return state.container
