"""Lifecycle hooks, termination messages, the pod's address in its env and the kubelet's
Events, end to end: the real node, the Vast simulator running each instance's process in a
sandbox, the agent inside it.

A pod whose ``postStart`` hook writes a file its process serves (with ``status.podIP`` from
its env) over HTTP; one whose hook fails (``FailedPostStartHook``); one that writes
``/dev/termination-log`` and exits 1; and one whose ``preStop`` hook's checkpoint reaches the
container's log, read through the node's provider while the delete is under way, before the
instance is destroyed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import Obj, event_reasons, gpu_pod, phase, wait_pod
from tests.e2e.test_agent import _app_running, _endpoint, _get, _until_text
from vk_trio.app import NodeRuntime
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.models import Pod
from vk_trio.node.provider import LogOptions, Provider


def _pod(name: str, namespace: str, container: dict[str, Any], **spec: Any) -> Obj:
    pod = gpu_pod(
        name,
        namespace,
        containers=[
            {
                "name": "app",
                "image": "busybox:1.36",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                **container,
            }
        ],
        annotations={"vast.ai/agent": "true"},
    )
    pod["spec"].update(spec)
    return pod


async def _events(cluster: Cluster, pod: Obj) -> list[Obj]:
    uid = pod["metadata"]["uid"]
    events = await cluster.list("events", cluster.namespace)
    return [e for e in events if e["involvedObject"].get("uid") == uid]


SERVE = (
    "mkdir -p /srv; cat /tmp/hook > /srv/hook 2>/dev/null || echo missing > /srv/hook; "
    'printf %s "$POD_IP" > /srv/ip; '
    "cd /srv && exec python3 -m http.server 8000 --bind 127.0.0.1"
)


async def test_post_start_hook_pod_ip_and_the_kubelets_events(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod = _pod(
        "hooked",
        cluster.namespace,
        {
            "command": ["sh", "-c", f"sleep 1; {SERVE}"],
            "ports": [{"containerPort": 8000}],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "lifecycle": {
                "postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/hook"]}}
            },
        },
    )
    await cluster.create(pod)
    running = await wait_pod(cluster, "hooked", _app_running, within=60)
    base = "http://" + _endpoint(running, "8000/tcp")
    await _until_text(base, "hook", "hooked\n", within=20)
    assert await _get(base, "ip") == running["status"]["podIP"]

    with trio.fail_after(20):
        while True:
            events = await _events(cluster, running)
            reasons = {e["reason"]: e for e in events}
            if {"Pulling", "Pulled", "Created", "Started"} <= set(reasons):
                break
            await trio.sleep(0.2)
    assert reasons["Pulling"]["message"] == 'Pulling image "busybox:1.36"'
    assert reasons["Pulled"]["message"].startswith('Successfully pulled image "busybox:1.36" in ')
    assert reasons["Created"]["message"] == "Created container: app"
    assert reasons["Started"]["message"] == "Started container app"
    for reason in ("Pulling", "Pulled", "Created", "Started"):
        assert reasons[reason]["involvedObject"]["fieldPath"] == "spec.containers{app}"


async def test_a_failing_post_start_hook(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod = _pod(
        "badhook",
        cluster.namespace,
        {
            "command": ["sh", "-c", "sleep 30"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}},
        },
        restartPolicy="Never",
    )
    await cluster.create(pod)
    failed = await wait_pod(cluster, "badhook", lambda p: phase(p) == "Failed", within=60)
    assert "FailedPostStartHook" in await event_reasons(cluster, failed)
    [event] = [e for e in await _events(cluster, failed) if e["reason"] == "FailedPostStartHook"]
    assert event["type"] == "Warning"
    assert event["message"].startswith("Exec lifecycle hook ([sh -c exit 3]) for Container")


async def test_the_termination_message(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod = _pod(
        "lastwords",
        cluster.namespace,
        {
            "command": [
                "sh",
                "-c",
                "printf 'out of memory on rank 3' > /dev/termination-log; exit 1",
            ]
        },
        restartPolicy="Never",
    )
    await cluster.create(pod)
    failed = await wait_pod(cluster, "lastwords", lambda p: phase(p) == "Failed", within=60)
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (1, "out of memory on rank 3")


async def _lines(provider: Provider, pod: Obj) -> AsyncIterator[str]:
    stream = await provider.logs(msgspec.convert(pod, Pod), "app", LogOptions(follow=True))
    buffered = ""
    async for chunk in stream:
        buffered += chunk.decode()
        *lines, buffered = buffered.split("\n")
        for line in lines:
            yield line


CHECKPOINTING = (
    "trap 'echo stopping after $(cat /tmp/checkpoint); exit 0' TERM; "
    "echo up; while true; do sleep 0.1; done"
)


async def test_pre_stop_runs_before_the_instance_is_destroyed(
    agent_node: NodeRuntime, containers_sim: VastSim, cluster: Cluster
) -> None:
    pod = _pod(
        "ckpt",
        cluster.namespace,
        {
            "command": ["sh", "-c", CHECKPOINTING],
            "lifecycle": {
                "preStop": {"exec": {"command": ["sh", "-c", "echo step-42 > /tmp/checkpoint"]}}
            },
        },
        terminationGracePeriodSeconds=10,
    )
    await cluster.create(pod)
    running = await wait_pod(cluster, "ckpt", _app_running, within=60)
    seen: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for line in _lines(agent_node.provider, running):
                    seen.append(line)
                    if line.startswith("stopping after"):
                        return

            nursery.start_soon(follow)
            await trio.sleep(0.5)
            await cluster.delete("pods", cluster.namespace, "ckpt", grace=10)
    assert seen[0] == "up"
    assert seen[-1] == "stopping after step-42"

    async def gone() -> bool | None:
        return True if await cluster.get("pods", cluster.namespace, "ckpt") is None else None

    with trio.fail_after(30):
        await cluster.wait_for(gone)
    [row] = [r for r in containers_sim.ledger() if r["label"].endswith(running["metadata"]["uid"])]
    assert row["destroyed_at"] is not None
