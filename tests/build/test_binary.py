"""The single static executable from build/build.sh, run as the container runs it.

Slow (a build takes about a minute), so these run only when asked for: ``pytest -m slow``.
``VK_TRIO_BINARY=/path/to/vk-trio`` tests that file instead of building; otherwise
build/out/vk-trio is used, and (re)built first when it is missing or older than the source.

What this guards: PyInstaller only sees static imports, and the spec drops parts of the
kubernetes package, so a lazily imported module that is missing from the bundle shows up
only when the frozen program reaches it. ``run`` loading a kubeconfig is that path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / "build" / "out" / "vk-trio"
SOURCES = [ROOT / "vk_trio", ROOT / "build", ROOT / "deployments" / "examples"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _only_when_selected(request: pytest.FixtureRequest) -> None:
    # Deselected by default: without an explicit -m expression these are skipped, so a
    # plain `pytest` never spends a minute building.
    if not request.config.getoption("markexpr"):
        pytest.skip("slow: run with `pytest -m slow`")


def _newest_source() -> float:
    """The newest mtime among what goes into the binary (not caches, not build outputs)."""
    return max(
        p.stat().st_mtime
        for top in SOURCES
        for p in top.rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".json", ".yaml", ".spec", ".sh")
        and not {"out", "__pycache__"} & set(p.relative_to(ROOT).parts)
    )


@pytest.fixture(scope="module")
def binary(_only_when_selected: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("VK_TRIO_BINARY")
    if given:
        source = Path(given)
        assert source.is_file(), f"VK_TRIO_BINARY={given} does not exist"
    else:
        source = DEFAULT_BINARY
        if not source.is_file() or source.stat().st_mtime < _newest_source():
            subprocess.run([str(ROOT / "build" / "build.sh")], check=True, timeout=1200)
    # A private copy: a rebuild replacing build/out/vk-trio mid-test would make the running
    # bootloader fail to reopen itself through /proc/self/exe.
    copy = tmp_path_factory.mktemp("bin") / "vk-trio"
    shutil.copy2(source, copy)
    return copy


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # The binary unpacks itself under TMPDIR; a private one shows what it leaves behind.
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(tmp), **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (staticx and PyInstaller each keep a
    parent process alive around the interpreter)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        status = Path(f"/proc/{current}/status").read_text()
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        children = Path(f"/proc/{current}/task/{current}/children")
        todo.extend(int(c) for c in children.read_text().split())
    return total


class Server:
    """A ``vk-trio`` command (``argv``) running in the background; stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        # Its own process group: the staticx and PyInstaller parents each fork, and a
        # SIGKILL to the top one alone would orphan the interpreter.
        self.proc = subprocess.Popen(
            argv,
            # One file for both: the node logs to stdout, the simulators to stderr (their
            # stdout is the URL they print), and an unread pipe could fill and block them.
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def url(self, timeout: float = 30.0) -> str:
        """The URL a simulator prints once it listens (the one log line that is not JSON)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                if line.startswith("http://"):
                    return line.strip()
            assert self.proc.poll() is None, f"exited early: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no URL: {self.log.read_text()[-2000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._log_file.close()
        return code


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def test_binary_is_static(binary: Path) -> None:
    described = subprocess.run(["file", "-L", str(binary)], capture_output=True, text=True)
    assert "statically linked" in described.stdout, described.stdout
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    assert os.access(binary, os.X_OK)


def test_help_lists_every_command_and_starts_quickly(binary: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    for command in ("run", "demo", "offers", "sim"):
        assert command in result.stdout
    # Two unpack steps and an interpreter start; measured ~0.8 s on 2 cores.
    assert elapsed < 10, f"--help took {elapsed:.1f}s"
    # Both extraction directories are removed on exit.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_sim_vast_answers_an_offer_search_and_stops_on_sigterm(
    binary: Path, tmp_path: Path, servers: list[Server]
) -> None:
    sim = Server(
        [str(binary), "sim", "vast", "--listen", "127.0.0.1:0"],
        _env(tmp_path),
        tmp_path / "vast.log",
    )
    servers.append(sim)
    url = sim.url()
    assert url.startswith("http://127.0.0.1:")
    query = {"gpu_name": {"eq": "RTX 3090"}, "rentable": {"eq": True}, "limit": 5}
    response = httpx.post(
        f"{url}/api/v0/bundles/", json=query, headers={"Authorization": "Bearer k"}, timeout=10
    )
    assert response.status_code == 200, response.text
    offers = response.json()["offers"]
    assert offers and all(o["gpu_name"] == "RTX 3090" for o in offers)
    print(f"sim vast idle RSS: {_rss_kb(sim.proc.pid) / 1024:.1f} MiB")
    # The simulator does not trap SIGTERM, so it dies of it; the two bootloader parents pass
    # the signal on and then die of it themselves, after removing what they unpacked.
    assert sim.stop() in (0, -signal.SIGTERM)
    assert list((tmp_path / "tmp").iterdir()) == []


def _simulators(
    binary: Path, tmp_path: Path, servers: list[Server], kubeconfig: Path
) -> dict[str, str]:
    """Start both stand-ins from the binary; the environment ``vk-trio run`` needs for them
    (the kubeconfig is written to ``kubeconfig``; ``HEALTH_PORT`` is a free port)."""
    kube = Server(
        [
            str(binary),
            "sim",
            "kube",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        _env(tmp_path),
        tmp_path / "kube.log",
    )
    servers.append(kube)
    kube.url()
    vast = Server(
        [str(binary), "sim", "vast", "--listen", "127.0.0.1:0"],
        _env(tmp_path),
        tmp_path / "vast.log",
    )
    servers.append(vast)
    return {
        "VAST_API_KEY": "test-key",
        "VAST_API_URL": vast.url(),
        "POD_IP": "127.0.0.1",
        "HEALTH_PORT": str(_free_port()),
        "KUBELET_PORT": str(_free_port()),
        "KUBELET_HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }


def registered(log: Path, node: str) -> bool:
    """The node's log (flat JSON lines) says it registered ``node``."""
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == "registered node" and record.get("node") == node:
            return True
    return False


def _wait_until_ready(node: Server, health_port: str, timeout: float = 60) -> None:
    """Poll /readyz until 200 (the node registered and Vast answered), then check /healthz."""
    deadline = time.monotonic() + timeout
    ready = None
    while time.monotonic() < deadline and node.proc.poll() is None:
        try:
            ready = httpx.get(f"http://127.0.0.1:{health_port}/readyz", timeout=2)
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    assert ready is not None and ready.status_code == 200, node.log.read_text()[-3000:]
    assert httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=2).status_code == 200


def test_run_loads_a_kubeconfig_registers_and_turns_ready(
    binary: Path, tmp_path: Path, servers: list[Server]
) -> None:
    """The container's command, against the stand-ins: the kubeconfig path imports
    kubernetes.config lazily inside the frozen program, then /healthz and /readyz answer."""
    kubeconfig = tmp_path / "kubeconfig"
    env = _env(
        tmp_path, KUBECONFIG=str(kubeconfig), **_simulators(binary, tmp_path, servers, kubeconfig)
    )
    node = Server([str(binary), "run"], env, tmp_path / "node.log")
    servers.append(node)
    _wait_until_ready(node, env["HEALTH_PORT"])
    print(f"run idle RSS: {_rss_kb(node.proc.pid) / 1024:.1f} MiB")
    assert node.stop() == 0, node.log.read_text()[-3000:]
    assert registered(node.log, "vast-gpu-node-python")


def test_demo_runs_from_the_binary(binary: Path, tmp_path: Path) -> None:
    # The examples are bundled, so the demo needs nothing from the source tree.
    result = subprocess.run(
        [str(binary), "demo", "--boot-seconds", "1"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "every pod is Running" in result.stdout
    assert "instances leaked:       0" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_runs_in_an_empty_root_as_a_non_root_user(
    binary: Path, tmp_path: Path, servers: list[Server]
) -> None:
    """What FROM scratch gives it: no libc, no /etc, no CA bundle, only /proc, a writable
    /tmp and the kubeconfig; ``run`` as uid 65532 registers and answers both probes.

    The stand-ins run outside the root and are reached over 127.0.0.1 (``chroot`` keeps the
    network namespace). Plain http everywhere, so no CA bundle is needed for this run.
    """
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    root.chmod(0o755)
    shutil.copy2(binary, root / "vk-trio")
    kubeconfig = tmp_path / "kubeconfig"
    sims = _simulators(binary, tmp_path, servers, kubeconfig)
    shutil.copy2(kubeconfig, root / "kubeconfig")
    (root / "kubeconfig").chmod(0o644)
    # /proc in a private mount namespace: the bootloaders re-open /proc/self/exe.
    script = (
        f"mount -t proc proc {root}/proc && exec chroot --userspec=65532:65532 {root} /vk-trio run"
    )
    # Exactly the environment the image and the Deployment give it (Dockerfile ENV).
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "TMPDIR": "/tmp",
        "HOME": "/tmp",
        "KUBECONFIG": "/kubeconfig",
        **sims,
    }
    node = Server(
        ["unshare", "--mount", "--pid", "--fork", "sh", "-c", script],
        env,
        tmp_path / "node.log",
    )
    servers.append(node)
    try:
        _wait_until_ready(node, env["HEALTH_PORT"])
    except AssertionError:
        log = node.log.read_text()
        if "unshare" in log and "Operation not permitted" in log:
            pytest.skip(f"no mount namespaces here: {log.strip()}")
        raise
    # unshare ignores SIGTERM while it waits; stop the node at the top process inside the
    # namespace (pid 1 there, a child of unshare here), as the kubelet would stop pid 1.
    [inside] = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()
    os.kill(int(inside), signal.SIGTERM)
    assert node.stop() == 0, node.log.read_text()[-3000:]
    assert registered(node.log, "vast-gpu-node-python")
