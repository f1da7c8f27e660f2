"""``vk-trio run`` refuses a setup that cannot work with one line that says what to fix, exit 2.

The node runs as the real process (``python -m vk_trio run``, configured by env vars as the
container is); the cluster is the in-process stand-in, or a wrapper of it that refuses what
RBAC would refuse, and Vast.ai is the simulator.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from tests.e2e.e2e import settings_for
from vk_trio.app import serve_node
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.vast import VastAuthError

NODE = "vk-startup-test"
Factory = Callable[..., Awaitable[Any]]


async def run_node(env: dict[str, str], *args: str, within: float = 60) -> tuple[int, list[str]]:
    """Exit status and output lines of ``vk-trio run`` with only ``env`` as its settings."""
    names = {name.upper() for name in Settings.__struct_fields__}
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in names and key not in {"RUST_LOG", "KUBERNETES_SERVICE_HOST"}
    }
    with trio.fail_after(within):
        result = await trio.run_process(
            [sys.executable, "-m", "vk_trio", "run", *args],
            env={**inherited, "NODE_NAME": NODE, "VAST_API_KEY": "startup-test-key", **env},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, (result.stdout + result.stderr).decode().splitlines()


def the_error(lines: list[str]) -> str:
    """The message of the one error the process logged, as its last line.

    Every line must be a JSON log record (a traceback is not); lines before the error may
    say what was tried (retries of an unreachable API server).
    """
    records = [json.loads(line) for line in lines]
    errors = [record for record in records if record["level"].upper() in ("ERROR", "CRITICAL")]
    assert len(errors) == 1 and errors[0] is records[-1], "\n".join(lines)
    message: str = errors[0]["msg"]
    return message


BAD_SETTINGS: list[tuple[dict[str, str] | list[str], list[str]]] = [
    # (env or flags, what the one line must say)
    ({"POLL_FAST": "-1"}, ["POLL_FAST (--poll-fast)", "'-1'", "> 0 (seconds)"]),
    ({"POLL_SLOW": "fast"}, ["POLL_SLOW (--poll-slow)", "'fast'", "number"]),
    ({"HEALTH_PORT": "99999"}, ["HEALTH_PORT (--health-port)", "'99999'", "1 to 65535"]),
    (["--health-port", "99999"], ["HEALTH_PORT (--health-port)", "'99999'", "1 to 65535"]),
    ({"KUBELET_PORT": "0"}, ["KUBELET_PORT (--kubelet-port)", "'0'", "1 to 65535"]),
    ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL (--log-level)", "'loud'", "warn"]),
    ({"MAX_HOURLY_SPEND": "-3"}, ["MAX_HOURLY_SPEND", "'-3'", ">= 0 (USD per hour)"]),
    ({"MAX_INSTANCES": "1.5"}, ["MAX_INSTANCES (--max-instances)", "'1.5'", "integer"]),
    ({"BACKOFF_CAP": "0"}, ["BACKOFF_CAP (--backoff-cap)", "'0'", "> 0"]),
    ({"BACKOFF_CAP": "5"}, ["BACKOFF_CAP (--backoff-cap)", "5.0", "BACKOFF_FIRST (15.0)"]),
    ({"LEASE_SECONDS": "0"}, ["LEASE_SECONDS (--lease-seconds)", "'0'", "10 to 120"]),
    ({"STARTUP_TIMEOUT": "inf"}, ["STARTUP_TIMEOUT", "'inf'", "finite"]),
    ({"PACING": "nan"}, ["PACING (--pacing)", "'nan'", "finite"]),
    ({"VAST_ATTEMPTS": "0"}, ["VAST_ATTEMPTS (--vast-attempts)", "'0'", ">= 1"]),
    ({"MAX_PODS": "0"}, ["MAX_PODS (--max-pods)", "'0'", ">= 1"]),
    ({"NODE_NAME": "My GPU Node"}, ["NODE_NAME (--node-name)", "'My GPU Node'", "lowercase"]),
    ({"VAST_API_URL": "console.vast.ai"}, ["VAST_API_URL", "http:// or https://"]),
]


async def test_every_bad_setting_stops_the_node_with_one_line_naming_it() -> None:
    """All cases run at once: each fails on its own, before any network call."""
    results: dict[int, tuple[int, list[str]]] = {}

    async def case(index: int, given: dict[str, str] | list[str]) -> None:
        env, args = (given, []) if isinstance(given, dict) else ({}, given)
        # Nothing listens at this kubeconfig's server: reaching it would hang, not exit 2.
        results[index] = await run_node({"KUBECONFIG": "/nonexistent", **env}, *args)

    async with trio.open_nursery() as nursery:
        for index, (given, _) in enumerate(BAD_SETTINGS):
            nursery.start_soon(case, index, given)
    for index, (given, expected) in enumerate(BAD_SETTINGS):
        code, lines = results[index]
        assert code == 2, (given, lines)
        assert len(lines) == 1, (given, lines)
        message = the_error(lines)
        assert message.startswith("invalid setting "), message
        for part in expected:
            assert part in message, (given, message)


def _kubeconfig_for(server: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("case", ["no kubeconfig", "missing file", "unreachable"])
async def test_a_cluster_that_cannot_be_found_or_reached_is_one_line(
    case: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # no ~/.kube/config in it
    home.mkdir()
    env = {"HOME": str(home)}
    if case == "missing file":
        env["KUBECONFIG"] = str(tmp_path / "nowhere" / "config")
        expected = [f"KUBECONFIG (--kubeconfig) names {env['KUBECONFIG']}, which does not exist"]
    elif case == "unreachable":
        server = f"http://127.0.0.1:{_free_port()}"
        env["KUBECONFIG"] = str(_kubeconfig_for(server, tmp_path / "kubeconfig"))
        expected = [f"cannot reach the Kubernetes API server at {server}", "KUBECONFIG"]
    else:
        expected = ["not running in a cluster", "set KUBECONFIG (--kubeconfig)"]
    code, lines = await run_node(env)
    assert code == 2
    message = the_error(lines)
    for part in expected:
        assert part in message, message


def _forbidding(sim: KubeSim, method: str, path: str) -> Callable[[Request], Awaitable[Response]]:
    """The stand-in, except that ``method path`` gets the 403 an RBAC refusal gets."""

    async def handle(request: Request) -> Response:
        if request.method == method and request.path == path:
            return Response.json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f'nodes is forbidden: User "system:serviceaccount:kube-system:vk" '
                    f'cannot {method.lower()} resource "nodes"',
                    "reason": "Forbidden",
                    "code": 403,
                },
                status=403,
            )
        return await sim.handle(request)

    return handle


@pytest.mark.parametrize(
    ("method", "path"), [("GET", f"/api/v1/nodes/{NODE}"), ("POST", "/api/v1/nodes")]
)
async def test_rbac_refusing_the_node_is_one_line_and_leaves_no_node(
    method: str, path: str, tmp_path: Path, nursery: trio.Nursery, vast_sim_factory: Factory
) -> None:
    """GET is refused by the check before registering; POST (may read, may not create) by
    registration itself, which no longer retries what only an operator can fix."""
    sim = KubeSim()
    url = await nursery.start(serve_http, _forbidding(sim, method, path))
    vast = await vast_sim_factory()
    env = {
        "KUBECONFIG": str(_kubeconfig_for(url, tmp_path / "kubeconfig")),
        "VAST_API_URL": vast.url,
        "PACING": "0",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(_free_port()),
    }
    code, lines = await run_node(env)
    assert code == 2
    message = the_error(lines)
    assert f"cannot {method.lower()} resource" in message
    assert "deployments/virtual-kubelet-vast-python.yaml" in message
    assert sim.get("nodes", None, NODE) is None


async def test_a_rejected_key_is_caught_before_the_node_registers(
    kube_sim: KubeSim, kubeconfig: Path, vast_sim_factory: Factory
) -> None:
    vast = await vast_sim_factory(api_key="the-right-key")
    env = {
        "KUBECONFIG": str(kubeconfig),
        "VAST_API_URL": vast.url,
        "VAST_API_KEY": "a-wrong-key-4242",
        "PACING": "0",
        "HEALTH_PORT": str(_free_port()),
    }
    code, lines = await run_node(env)
    assert code == 2
    message = the_error(lines)
    assert "Vast.ai rejected VAST_API_KEY" in message and "vast-api-secret" in message
    assert "a-wrong-key-4242" not in "".join(lines)
    assert kube_sim.get("nodes", None, NODE) is None  # never shown to the scheduler


async def test_a_taken_probe_port_is_one_line(
    kube_sim: KubeSim, kubeconfig: Path, vast_sim_factory: Factory
) -> None:
    vast = await vast_sim_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "KUBECONFIG": str(kubeconfig),
            "VAST_API_URL": vast.url,
            "PACING": "0",
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(port),
        }
        code, lines = await run_node(env)
    assert code == 2
    message = the_error(lines)
    assert f"cannot serve the health probes on 127.0.0.1:{port}" in message
    assert "HEALTH_PORT (--health-port)" in message


async def test_a_node_that_fails_after_registering_goes_not_ready_with_the_reason(
    kube_sim: KubeSim, kubeconfig: Path, vast_sim_factory: Factory
) -> None:
    """Without the start-up check (the node embedded in-process, as the demo runs it) a
    rejected key is found by the first instance sweep, after registration: the Node must not
    stay Ready behind the exited process."""
    vast = await vast_sim_factory(api_key="the-right-key")
    settings = settings_for(vast.url, kubeconfig, node_name=NODE, vast_api_key="wrong-key-77")
    with pytest.RaisesGroup(VastAuthError, flatten_subgroups=True):
        with trio.fail_after(30):
            await serve_node(settings)
    node = kube_sim.get("nodes", None, NODE)
    assert node is not None
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith("vk-trio stopped: Vast.ai rejected VAST_API_KEY")


async def test_vast_down_at_start_is_not_fatal(
    kube_sim: KubeSim, kubeconfig: Path, tmp_path: Path
) -> None:
    """Only a rejected key stops the node: a Vast outage at start is reported on /readyz by
    the running node, which must still register (its pods keep their instances)."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"},
        "NODE_NAME": NODE,
        "VAST_API_KEY": "startup-test-key",
        "VAST_API_URL": f"http://127.0.0.1:{_free_port()}",  # nothing listens
        "KUBECONFIG": str(kubeconfig),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(_free_port()),
    }
    log = tmp_path / "node.log"
    with log.open("wb") as sink:
        node = await trio.lowlevel.open_process(
            [sys.executable, "-m", "vk_trio", "run"], env=env, stdout=sink, stderr=sink
        )
        try:
            with trio.fail_after(60):
                await kube_sim.wait_until(lambda sim: sim.get("nodes", None, NODE) is not None)
            node.terminate()  # SIGTERM, as the kubelet stops a container
            with trio.fail_after(20):
                assert await node.wait() == 0
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
    assert "Vast.ai is failing at start; serving anyway" in log.read_text()
