"""The whole pod, end to end: the real node, the Vast simulator running each instance's
process in a sandbox (``run_containers``), the bootstrap downloading and checking the agent,
the link, the pod's files and processes.

One pod with a ConfigMap volume, a Secret volume (items, defaultMode 0400), an emptyDir, a
subPath mount and an init container in the same image: its process serves its root over HTTP
on a published port, so the test reads what the process sees. Also: the create request holds
no Secret value; the link refuses strangers; an exit restarts the process on the same
instance with the exit code in ``lastState``; a pod with a PVC is refused and nothing bought.
"""

from __future__ import annotations

import base64
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import (
    Obj,
    bought_for,
    event_reasons,
    gpu_pod,
    phase,
    settings_for,
    wait_pod,
)
from vk_trio.agent.link import client_context, node_keys, pod_secret
from vk_trio.agent.protocol import AGENT_PORT
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.models import Pod
from vk_trio.node.provider import LogOptions, Provider

SECRET = "s3cr3t-token-value"


def _objects(namespace: str) -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": namespace},
            "data": {"app.conf": "mode=fast\n", "extra.conf": "level=1\n"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-secret", "namespace": namespace},
            "data": {"token": base64.b64encode(SECRET.encode()).decode()},
        },
    ]


SCRIPT = (
    "set -e; mkdir -p /srv; "
    "stat -L -c %a /etc/secret/token-file > /srv/secret-mode; "
    "cat /etc/secret/token-file > /srv/secret; "
    "cat /scratch/init-ran > /srv/init; "
    'printf %s "$TOKEN" > /srv/env-token; '
    "ln -s /etc/config /srv/config; ln -s /etc/single.conf /srv/single.conf; "
    "cd /srv && exec python3 -m http.server 8000 --bind 127.0.0.1"
)


def _agent_pod(namespace: str) -> Obj:
    pod = gpu_pod(
        "whole",
        namespace,
        containers=[
            {
                "name": "app",
                "image": "busybox:1.36",
                "command": ["sh", "-c", SCRIPT],
                "ports": [{"containerPort": 8000}],
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "token"}},
                    }
                ],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config"},
                    {"name": "secret", "mountPath": "/etc/secret", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "config", "mountPath": "/etc/single.conf", "subPath": "extra.conf"},
                ],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ],
    )
    pod["spec"]["initContainers"] = [
        {
            "name": "setup",
            "image": "busybox:1.36",
            "command": ["sh", "-c", "echo init ran > /scratch/init-ran"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }
    ]
    pod["spec"]["volumes"] = [
        {"name": "config", "configMap": {"name": "app-config"}},
        {
            "name": "secret",
            "secret": {
                "secretName": "app-secret",
                "defaultMode": 0o400,
                "items": [{"key": "token", "path": "token-file"}],
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    return pod


def _script_pod(
    name: str, namespace: str, script: str, *, ask_agent: bool = True, **container: Any
) -> Obj:
    """A pod whose one container runs ``script`` under ``sh -c`` (in the host's userland,
    the simulator's default image), annotated ``vast.ai/agent: "true"`` unless
    ``ask_agent`` is False (a pod that needs the agent gets it anyway)."""
    return gpu_pod(
        name,
        namespace,
        containers=[
            {
                "name": "app",
                "image": "busybox:1.36",
                "command": ["sh", "-c", script],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                **container,
            }
        ],
        annotations={"vast.ai/agent": "true"} if ask_agent else None,
    )


async def _get(base: str, path: str) -> str:
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(f"{base}/{path}")
        response.raise_for_status()
        return response.text


async def _until_text(base: str, path: str, wanted: str, *, within: float) -> None:
    with trio.fail_after(within):
        while True:
            try:
                if await _get(base, path) == wanted:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.2)


def _endpoint(pod: Obj, port: str) -> str:
    return str(json.loads(pod["metadata"]["annotations"]["vast.ai/endpoints"])[port])


async def test_the_whole_pod_runs_with_its_files_and_no_secret_goes_through_vast(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    for obj in _objects(cluster.namespace):
        await cluster.create(obj)
    await cluster.create(_agent_pod(cluster.namespace))
    pod = await wait_pod(cluster, "whole", lambda p: _app_running(p), within=60)
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Initialized"] == "True"

    base = "http://" + _endpoint(pod, "8000/tcp")
    await _until_text(base, "init", "init ran\n", within=20)
    assert await _get(base, "config/app.conf") == "mode=fast\n"
    assert await _get(base, "single.conf") == "level=1\n"
    assert await _get(base, "secret") == SECRET
    assert await _get(base, "secret-mode") == "400\n"
    assert await _get(base, "env-token") == SECRET

    # the create request carried none of the pod's Secret values (Vast keeps it)
    assert len(bought_for(containers_sim, pod)) == 1
    requests = json.dumps(containers_sim.create_requests())
    assert "onstart" in requests and SECRET not in requests
    assert base64.b64encode(SECRET.encode()).decode() not in requests

    # an edited ConfigMap reaches the file (atomically, through ..data); the subPath copy stays
    edit = {"data": {"app.conf": "mode=slow\n", "extra.conf": "level=2\n"}}
    await cluster.patch("configmaps", cluster.namespace, "app-config", edit)
    await _until_text(base, "config/app.conf", "mode=slow\n", within=30)
    assert await _get(base, "single.conf") == "level=1\n"


async def _restarted_in_place(cluster: Cluster, sim: VastSim, name: str) -> Obj:
    """The pod once its container restarted, on its one instance (not a new one)."""
    pod = await wait_pod(cluster, name, lambda p: _restarts(p) >= 1, within=60)
    assert len(bought_for(sim, pod)) == 1
    return pod


def _restarts(pod: Obj) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return int(statuses[0].get("restartCount", 0))


def _app_running(pod: Obj) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return phase(pod) == "Running" and bool(statuses) and "running" in statuses[0]["state"]


async def test_an_exit_restarts_the_process_on_the_same_instance(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod = _script_pod(
        "crash",
        cluster.namespace,
        "echo starting; sleep 0.5; exit 3",
    )
    await cluster.create(pod)
    crashed = await _restarted_in_place(cluster, containers_sim, "crash")
    last = crashed["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 3
    assert last["reason"] == "Error"


async def test_the_link_refuses_a_client_without_the_pods_credentials(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    for obj in _objects(cluster.namespace):
        await cluster.create(obj)
    await cluster.create(_agent_pod(cluster.namespace))
    pod = await wait_pod(cluster, "whole", lambda p: _app_running(p), within=60)
    host, _, port = _endpoint(pod, f"{AGENT_PORT}/tcp").rpartition(":")
    other = node_keys(pod_secret(b"another node's master", pod["metadata"]["uid"]))
    for context in (ssl.create_default_context(), client_context(other)):
        context.check_hostname = False
        if context.verify_mode == ssl.CERT_REQUIRED and context is not None:
            context.verify_mode = ssl.CERT_NONE
        tcp = await trio.open_tcp_stream(host, int(port))
        tls = trio.SSLStream(tcp, context, server_hostname="vk-trio-agent")
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
            await tls.do_handshake()
            await tls.send_all(b"\x00\x00\x00\x01\x80")
            assert await tls.receive_some(10) == b""  # nothing answered
            raise trio.BrokenResourceError


async def test_a_pod_with_a_persistent_volume_claim_is_refused_and_nothing_is_bought(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod: dict[str, Any] = gpu_pod("pvc", cluster.namespace)
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    await cluster.create(pod)
    refused = await wait_pod(
        cluster,
        "pvc",
        lambda p: (
            (p["status"].get("containerStatuses") or [{}])[0]
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "UnsupportedVolume"
        ),
    )
    message = refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert 'volume "data"' in message and "persistentVolumeClaim" in message
    await trio.sleep(1.0)
    assert bought_for(containers_sim, refused) == []


def _pod_model(pod: Obj) -> Pod:
    return msgspec.convert(pod, Pod)


async def _lines(provider: Provider, pod: Obj, options: LogOptions) -> AsyncIterator[str]:
    stream = await provider.logs(_pod_model(pod), "app", options)
    buffered = ""
    async for chunk in stream:
        buffered += chunk.decode()
        *lines, buffered = buffered.split("\n")
        for line in lines:
            yield line


async def test_logs_follow_within_a_second_and_previous_shows_the_last_run(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    ticker = "i=0; while [ $i -lt 4 ]; do echo tick $i; i=$((i+1)); sleep 0.5; done; exit 1"
    pod = _script_pod(
        "ticker",
        cluster.namespace,
        ticker,
    )
    await cluster.create(pod)
    running = await wait_pod(cluster, "ticker", _app_running, within=60)
    arrivals: list[float] = []
    seen: list[str] = []
    with trio.fail_after(10):
        async for line in _lines(agent_node.provider, running, LogOptions(follow=True)):
            seen.append(line)
            arrivals.append(trio.current_time())
            if line == "tick 3":
                break
    assert seen[-2:] == ["tick 2", "tick 3"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) < 1.0  # each line within a second of the process writing it

    restarted = await wait_pod(
        cluster,
        "ticker",
        lambda p: _restarts(p) >= 1,
        within=30,
    )
    with trio.fail_after(10):
        previous = [
            line async for line in _lines(agent_node.provider, restarted, LogOptions(previous=True))
        ]
    assert previous == ["tick 0", "tick 1", "tick 2", "tick 3"]


async def test_a_restarted_node_reconnects_without_restarting_the_process(
    nursery: trio.Nursery,
    containers_sim: VastSim,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(
        containers_sim.url, cluster.kubeconfig, agent_url=containers_sim.agent_url
    )
    pod = _script_pod(
        "steady",
        cluster.namespace,
        "echo up; exec sleep 3600",
    )
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            await cluster.create(pod)
            before = await wait_pod(cluster, "steady", _app_running, within=60)
            first_run.cancel()
    started = before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]

    second: NodeRuntime = await nursery.start(serve_node, settings)
    with trio.fail_after(20):
        # linked again (until then, logs are the instance's own: the agent's lines), the
        # agent answers with its one run's output
        for _ in itertools.count():
            if [line async for line in _lines(second.provider, before, LogOptions())] == ["up"]:
                break
            await trio.sleep(0.2)
    after = await cluster.get("pods", cluster.namespace, "steady")
    assert after is not None
    status = after["status"]["containerStatuses"][0]
    assert status["state"]["running"]["startedAt"] == started
    assert status["restartCount"] == 0
    assert len(bought_for(containers_sim, after)) == 1


async def test_a_failing_exec_liveness_probe_restarts_the_process_in_place(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    script = "touch /tmp/healthy; sleep 1; rm /tmp/healthy; exec sleep 3600"
    pod = _script_pod(
        "probed",
        cluster.namespace,
        script,
        ask_agent=False,  # the exec probe alone puts it under the agent
        livenessProbe={
            "exec": {"command": ["test", "-f", "/tmp/healthy"]},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    await cluster.create(pod)
    restarted = await _restarted_in_place(cluster, containers_sim, "probed")
    last = restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert "Liveness probe failed" in last.get("message", "")
    kinds = {c["type"] for c in restarted["status"]["conditions"]}
    assert "vast.ai/ProbesIgnored" not in kinds  # the agent runs exec probes: none ignored


async def test_a_failing_http_liveness_probe_restarts_the_process_in_place(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    script = "timeout 2 python3 -m http.server 8000 --bind 127.0.0.1; exec sleep 3600"
    pod = _script_pod(
        "served",
        cluster.namespace,
        script,
        ports=[{"containerPort": 8000}],
        livenessProbe={
            "httpGet": {"path": "/", "port": 8000},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    await cluster.create(pod)
    restarted = await _restarted_in_place(cluster, containers_sim, "served")
    assert "Killing" in await event_reasons(cluster, restarted)
