"""``kubectl exec``, ``cp`` and ``port-forward`` end to end, on a pod under the vk-trio agent:
the real kubectl → the API stand-in (its SPDY upgrade proxy) → the node's kubelet API →
the agent link → a real process in the Vast simulator's sandboxed container (whose userland
is this machine's: ``sh``, ``tar``, ``python3``).

Also a terminal: ``kubectl exec -it`` on a pseudo-terminal this test drives, whose window
the test resizes, and ``stty size`` inside the container sees the new size.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import struct
import termios
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.e2e import gpu_pod
from tests.kubelet.conftest import Kubectl, ServedNode, free_port
from tests.plugins.kube_sim import KUBECTL
from vk_trio.devtools.sim.kube import KubeSim

SERVERS = (
    "mkdir -p /tmp/www-8000 /tmp/www-9000; "
    "echo published > /tmp/www-8000/index.html; echo private > /tmp/www-9000/index.html; "
    "python3 -m http.server 9000 --bind 127.0.0.1 --directory /tmp/www-9000 & "
    "exec python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www-8000"
)
"""The pod's process: a server on its published port 8000, and one on 9000 it does not
publish."""


@pytest.fixture
async def kubectl(served_node: ServedNode, kube_sim: KubeSim) -> Kubectl:
    run = await served_node(agent=True, run_containers=True, boot_seconds=0.2)
    kube_sim.create(
        gpu_pod(
            "shell",
            "default",
            containers=[
                {
                    "name": "app",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", SERVERS],
                    "ports": [{"containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            annotations={"vast.ai/agent": "true"},
        )
    )
    with trio.fail_after(90):
        while True:  # linked: the agent runs the pod's process and answers exec
            if (await run("exec", "shell", "--", "true"))[0] == 0:
                return run
            await trio.sleep(0.5)


async def test_exec_shows_both_streams_and_exits_with_the_code(
    kubectl: Kubectl, kube_sim: KubeSim
) -> None:
    script = "echo out; echo err >&2; exit 3"
    before = len(kube_sim.node_api.upgrades)  # the fixture's tries fell back while unlinked
    code, out, err = await kubectl("exec", "shell", "--", "sh", "-c", script)
    assert (code, out) == (3, "out\n")
    assert err.startswith("err\n")
    assert "command terminated with exit code 3" in err
    # The node declares WebSocket (it serves it), so the stand-in, as a 1.36 API server,
    # passed kubectl's WebSocket straight through: no SPDY fallback anywhere.
    (node,) = kube_sim.list("nodes")
    assert node["status"]["declaredFeatures"] == ["ExtendWebSocketsToKubelet"]
    assert kube_sim.node_api.upgrades[before:] == ["websocket"]


async def test_exec_with_stdin_and_cp_both_ways(kubectl: Kubectl, tmp_path: Path) -> None:
    code, out, err = await kubectl("exec", "-i", "shell", "--", "cat", stdin=b"hi\n")
    assert (code, out, err) == (0, "hi\n", "")

    sent = tmp_path / "sent.bin"
    sent.write_bytes(os.urandom(10 * 2**20))
    code, _, err = await kubectl("cp", str(sent), "shell:/tmp/copied.bin", within=120)
    assert code == 0, err
    back = tmp_path / "back.bin"
    code, _, err = await kubectl("cp", "shell:/tmp/copied.bin", str(back), within=120)
    assert code == 0, err
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(sent.read_bytes()).digest()


async def test_port_forward_published_and_unpublished_ports_and_concurrent_requests(
    kubectl: Kubectl, nursery: trio.Nursery
) -> None:
    local_8000, local_9000 = free_port(), free_port()
    for ports in (f"{local_8000}:8000", f"{local_9000}:9000"):
        ready = trio.Event()
        nursery.start_soon(kubectl.port_forward, "shell", ports, ready)
        with trio.fail_after(30):
            await ready.wait()
    async with httpx.AsyncClient(timeout=30) as client:
        published = await client.get(f"http://127.0.0.1:{local_8000}/")
        assert (published.status_code, published.text) == (200, "published\n")
        private = await client.get(f"http://127.0.0.1:{local_9000}/")
        assert (private.status_code, private.text) == (200, "private\n")

    answers: list[str] = []

    async def one() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            answers.append((await client.get(f"http://127.0.0.1:{local_8000}/")).text)

    with trio.fail_after(60):
        async with trio.open_nursery() as requests:
            for _ in range(20):
                requests.start_soon(one)
    assert answers == ["published\n"] * 20


def _set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _controlling_terminal() -> None:
    """In the child: a new session whose controlling terminal is its stdin (so that it gets
    SIGWINCH when the window changes, as kubectl on a real terminal does)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


_SIZE = re.compile(rb"(\d+) (\d+)\r?\n")


async def _stty_size(terminal: trio.lowlevel.FdStream) -> tuple[int, int]:
    """Run ``stty size`` in the shell and read its answer (rows, columns)."""
    await terminal.send_all(b"stty size\n")
    seen = b""
    with trio.fail_after(20):
        while (found := _SIZE.search(seen)) is None:
            try:
                seen += await terminal.receive_some(4096)
            except trio.BrokenResourceError:
                raise AssertionError(f"the terminal closed after {seen!r}") from None
    return int(found[1]), int(found[2])


async def test_exec_on_a_terminal_follows_the_windows_size(
    kubectl: Kubectl,
) -> None:
    main, secondary = pty.openpty()
    _set_size(secondary, 40, 100)
    env = {**os.environ, "KUBECONFIG": str(kubectl.kubeconfig), "HOME": str(kubectl.home)}
    process = await trio.lowlevel.open_process(
        [str(KUBECTL), "exec", "-it", "shell", "--", "sh"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        preexec_fn=_controlling_terminal,
    )
    os.close(secondary)
    terminal = trio.lowlevel.FdStream(main)
    try:
        await trio.sleep(2)  # the shell starts, and kubectl sends the first size
        assert await _stty_size(terminal) == (40, 100)
        _set_size(main, 50, 120)  # SIGWINCH to kubectl, which sends the new size
        await trio.sleep(1)
        assert await _stty_size(terminal) == (50, 120)
        await terminal.send_all(b"exit\n")
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await terminal.aclose()
