"""The agent as a container's PID 1 (``unshare --pid``): it reaps the orphans a pod leaves,
and the exit codes of its own processes survive the reaping."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.agent.harness import NODE, SECRET, bundle, sh
from vk_trio.agent.link import FrameStream, agent_credentials, client_context
from vk_trio.agent.protocol import Answer, PodState, Request, Start, Watch

ROOT = Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _connect(port: int) -> FrameStream:
    with trio.fail_after(20):
        while True:
            try:
                tcp = await trio.open_tcp_stream("127.0.0.1", port)
                break
            except OSError:
                await trio.sleep(0.05)
    tls = trio.SSLStream(tcp, client_context(NODE), server_hostname="vk-trio-agent")
    await tls.do_handshake()
    return FrameStream(tls)


async def _ask(port: int, request: Request) -> Answer | None:
    frames = await _connect(port)
    async with frames.stream:
        await frames.send(request)
        return await frames.receive_answer()


def _zombie_children(parent: int) -> list[int]:
    zombies = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{name}/stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) == parent:
            zombies.append(int(name))
    return zombies


def _agent_pid(unshare_pid: int) -> int:
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    return int(children[0])


async def test_pid_1_reaps_orphans_and_keeps_exit_codes(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "VK_TRIO_LINK": agent_credentials(SECRET),
        "VK_TRIO_AGENT_PORT": str(port),
        "VK_TRIO_AGENT_DIR": str(tmp_path / "state"),
        "VK_TRIO_AGENT_ROOT": str(tmp_path / "root"),
    }
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "vk_trio"]
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, [*command, "agent"], env=env, stderr=subprocess.PIPE)
        agent = await nursery.start(run)
        # Five orphans that exit at once (their parent shell is gone), then exit 3.
        script = "for i in 1 2 3 4 5; do (sleep 0.05 &); done; sleep 0.5; exit 3"
        await _ask(port, Start(bundle=bundle(sh("main", script), restart_policy="Never")))
        frames = await _connect(port)
        async with frames.stream:
            await frames.send(Watch(heartbeat=1))
            with trio.fail_after(10):
                while True:
                    state = await frames.receive_answer()
                    assert isinstance(state, PodState)
                    if state.finished:
                        break
        assert state.container.terminated is not None
        assert state.container.terminated.exit_code == 3  # not stolen by the reaper
        pid1 = _agent_pid(agent.pid)
        with trio.fail_after(5):
            for _ in iter(lambda: _zombie_children(pid1), []):
                await trio.sleep(0.1)
        os.kill(pid1, signal.SIGTERM)
        with trio.fail_after(10):
            await agent.wait()
