"""``vk-trio run`` as the container runs it: a process configured by env vars, stopped by SIGTERM.

Both simulators run as their own processes too; everything is observed from outside: the
health probes over HTTP, the Node through the API, the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

NODE = "vk-run-test"


@contextmanager
def process(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m vk_trio ARGS`` with its output in ``log`` (a pipe nobody reads could fill).

    A simulator keeps stdout a pipe: it prints its URL there first, and logs to stderr. The
    node logs to stdout, as the container does, so both streams go to ``log``.
    """
    sink = log.open("wb") if log else subprocess.DEVNULL
    child = subprocess.Popen(
        [sys.executable, "-m", "vk_trio", *args],
        stdout=subprocess.PIPE if args[0] == "sim" else sink,
        stderr=sink,
        env=env,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_run_serves_probes_registers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    health = free_port()
    sims = [("vast", "--rate-limits", "off"), ("kube", "--kubeconfig-out", str(kubeconfig))]
    with (
        process("sim", *sims[0], "--listen", "127.0.0.1:0") as vast,
        process("sim", *sims[1], "--listen", "127.0.0.1:0") as kube,
    ):
        assert vast.stdout is not None and kube.stdout is not None
        vast_url = vast.stdout.readline().decode().strip()
        kube_url = kube.stdout.readline().decode().strip()
        env = {
            **os.environ,
            "NODE_NAME": NODE,
            "VAST_API_KEY": "run-test-key",
            "VAST_API_URL": vast_url,
            "KUBECONFIG": str(kubeconfig),
            "HEALTH_PORT": str(health),
            "KUBELET_HOST": "127.0.0.1",
            "KUBELET_PORT": str(free_port()),
            "LOG_LEVEL": "INFO",
        }
        log = tmp_path / "node.log"
        with process("run", "--health-port", str(health), env=env, log=log) as node:
            probes = f"http://127.0.0.1:{health}"
            ready = wait_for(lambda: httpx.get(f"{probes}/readyz").status_code == 200)
            assert ready and httpx.get(f"{probes}/healthz").text == "ok\n"
            registered = httpx.get(f"{kube_url}/api/v1/nodes/{NODE}").json()
            conditions = {c["type"]: c["status"] for c in registered["status"]["conditions"]}
            assert conditions["Ready"] == "True"

            node.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert node.wait(timeout=20) == 0
            stop_seconds = time.monotonic() - signalled
            logs = log.read_text()
        stopped = httpx.get(f"{kube_url}/api/v1/nodes/{NODE}").json()
    ready_condition = next(c for c in stopped["status"]["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "False"
    assert "shutting down" in ready_condition["message"]
    # Flat JSON log lines, as the container writes them (the simulators' share the file).
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    stopping = [r for r in records if r["msg"] == "stopping"]
    assert stopping == [{**stopping[0], "logger": "vk_trio.app", "signal": "SIGTERM"}]
    assert "run-test-key" not in logs
    assert stop_seconds < 5.0  # a rolling update never waits on us


def test_run_with_a_rejected_key_exits_at_once_and_says_why(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    key_file = tmp_path / "api-key"
    key_file.write_text("a-wrong-key-4242\n")  # as a mounted Secret file, newline included
    with (
        process("sim", "vast", "--api-key", "the-right-key", "--listen", "127.0.0.1:0") as vast,
        process(
            "sim", "kube", "--kubeconfig-out", str(kubeconfig), "--listen", "127.0.0.1:0"
        ) as kube,
    ):
        assert vast.stdout is not None and kube.stdout is not None
        kube.stdout.readline()  # listening, and the kubeconfig is written
        env = {k: v for k, v in os.environ.items() if k != "VAST_API_KEY"}
        env |= {
            "NODE_NAME": NODE,
            "VAST_API_KEY_FILE": str(key_file),
            "VAST_API_URL": vast.stdout.readline().decode().strip(),
            "KUBECONFIG": str(kubeconfig),
            "HEALTH_PORT": str(free_port()),
            "KUBELET_HOST": "127.0.0.1",
            "KUBELET_PORT": str(free_port()),
        }
        log = tmp_path / "node.log"
        with process("run", env=env, log=log) as node:
            assert node.wait(timeout=30) == 2
    logs = log.read_text()
    assert "rejected VAST_API_KEY" in logs
    assert "a-wrong-key-4242" not in logs


def test_run_without_an_api_key_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VAST_API_KEY"}
    log = tmp_path / "node.log"
    with process("run", env=env, log=log) as node:
        assert node.wait(timeout=30) == 2
    assert "VAST_API_KEY is not set" in log.read_text()
