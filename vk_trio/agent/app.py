"""The agent's process tree: the runner, the link's server and the reaper, under one nursery,
until SIGTERM/SIGINT stops the pod within its grace period.

Apart from ``main.py`` so that ``vk-trio --help`` (which loads every command's module) does
not load TLS, the runner and their dependencies.
"""

from __future__ import annotations

import signal

import trio
from loguru import logger

from vk_trio.agent.children import reap_orphans
from vk_trio.agent.runner import Runner
from vk_trio.agent.server import LinkServer, serve_link
from vk_trio.agent.settings import AgentSettings
from vk_trio.agent.usage import read_usage
from vk_trio.agent.volumes import Volumes

__all__ = ["run_agent"]


async def run_agent(
    settings: AgentSettings,
    runner: Runner | None = None,
    *,
    task_status: trio.TaskStatus[LinkServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the link and run the pod until SIGTERM/SIGINT, then stop the pod within its
    grace period. ``task_status`` gets the link's server (its ``port``: tests listen on 0)."""
    if runner is None:
        volumes = Volumes(settings.root, settings.state_dir)
        runner = Runner(volumes, settings.state_dir / "logs")
    server = LinkServer(
        runner, settings.keys, read_usage, handshake_timeout=settings.handshake_timeout
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            nursery.start_soon(reap_orphans, runner.children)
            listeners = await nursery.start(
                lambda task_status: serve_link(
                    server, port=settings.port, host=settings.host, task_status=task_status
                )
            )
            server.port = listeners[0].socket.getsockname()[1]
            logger.info(f"agent listening on port {server.port}")
            task_status.started(server)
            async for signum in signals:
                logger.info(f"agent stopping ({signal.Signals(signum).name})")
                await runner.shutdown()
                nursery.cancel_scope.cancel()
                break
