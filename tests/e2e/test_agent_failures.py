"""When the agent cannot start, the pod says why: an image with no ``/bin/sh`` for the
bootstrap, and a download that fails. A pod that needs the agent is never run without it.
The real node against the Vast simulator running instances' processes in sandboxes."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import Obj, gpu_pod, settings_for, wait_event, wait_pod
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.images import single_binary_root
from vk_trio.kube.models import Pod
from vk_trio.node.provider import LogOptions, NotReady

DISTROLESS = "example.com/distroless"


def _agent_pod(name: str, namespace: str, image: str) -> Obj:
    return gpu_pod(
        name,
        namespace,
        containers=[
            {
                "name": "app",
                "image": image,
                "command": ["/app/server"],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ],
        annotations={"vast.ai/agent": "true"},
    )


def _terminated(pod: Obj) -> dict[str, object] | None:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    state = statuses[0].get("state", {})
    last = statuses[0].get("lastState", {})
    found = state.get("terminated") or last.get("terminated")
    return dict(found) if found else None


async def test_an_image_without_a_shell_says_the_agent_cannot_start(
    nursery: trio.Nursery, vast_sim_factory: VastSimFactory, cluster: Cluster, tmp_path: Path
) -> None:
    true = shutil.which("true")
    assert true is not None
    root = single_binary_root(tmp_path / "distroless", true, "/app/server", libraries=True)
    sim = await vast_sim_factory(
        run_containers=True, boot_seconds=0.2, image_roots={DISTROLESS: str(root)}
    )
    if not sim.runs_containers:
        pytest.fail(f"the sandbox cannot run here: {sim._sandbox_problem}")
    settings = settings_for(
        sim.url, cluster.kubeconfig, agent_url=sim.agent_url, machine_failures=1
    )
    await nursery.start(serve_node, settings)
    await cluster.create(_agent_pod("shell-less", cluster.namespace, f"{DISTROLESS}:1"))
    pod = await wait_pod(cluster, "shell-less", lambda p: _terminated(p) is not None, within=30)
    terminated = _terminated(pod)
    assert terminated is not None
    assert "no /bin/sh" in str(terminated["message"])
    await wait_event(cluster, pod, "AgentUnavailable")


async def test_a_failed_download_says_so_and_the_log_shows_the_bootstrap(
    nursery: trio.Nursery, vast_sim_factory: VastSimFactory, cluster: Cluster
) -> None:
    sim = await vast_sim_factory(run_containers=True, boot_seconds=0.2)
    if not sim.runs_containers:
        pytest.fail(f"the sandbox cannot run here: {sim._sandbox_problem}")
    settings = settings_for(
        sim.url,
        cluster.kubeconfig,
        agent_url=f"{sim.url}/no-such-agent",
        agent_sha256="0" * 64,
    )
    runtime: NodeRuntime = await nursery.start(serve_node, settings)
    await cluster.create(_agent_pod("no-agent", cluster.namespace, "busybox:1.36"))
    running = await wait_pod(
        cluster, "no-agent", lambda p: bool(p["status"].get("podIP")), within=30
    )
    # until it gives up (five tries), the instance's own output is the pod's log: the
    # downloader's error, then the bootstrap's line
    model = msgspec.convert(running, Pod)
    with trio.fail_after(30):
        while True:
            try:
                stream = await runtime.provider.logs(model, "app", LogOptions())
                text = b"".join([chunk async for chunk in stream]).decode()
            except NotReady as exc:  # Vast uploads an instance's log a little later
                text = str(exc)
            if "404" in text or "could not download the agent" in text:
                break
            await trio.sleep(0.5)
    pod = await wait_pod(cluster, "no-agent", lambda p: _terminated(p) is not None, within=30)
    assert "could not be downloaded" in str(_terminated(pod))
    await wait_event(cluster, pod, "AgentUnavailable")
