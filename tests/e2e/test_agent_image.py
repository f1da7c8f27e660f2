"""The agent delivered from the node's own image, end to end, with no ``--agent-url``: the
registry simulator holds an image whose single layer is a gzip'd tar with ``vk-trio`` (the
agent the Vast simulator would serve: ``agent_bytes()``), the node is given that image
(``agent_image``, as it would find its own in a cluster), and the Vast simulator's sandboxes
reach the registry (``reachable``). The instance's bootstrap asks the registry's token server
for an anonymous token itself, downloads the layer, checks its digest, unpacks the agent and
runs the pod under it. A layer that is not its digest is refused inside the instance (exit
94) and the pod says ``AgentUnavailable``."""

from __future__ import annotations

import io
import json
import tarfile
from typing import NamedTuple

import httpx
import pytest
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import Obj, bought_for, event_reasons, gpu_pod, phase, settings_for, wait_pod
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.agent.bootstrap import AGENT_LAYER_ENV, AGENT_URL_ENV, WRONG_CHECKSUM
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.devtools.sim.vast.agent import agent_bytes

SCRIPT = (
    "set -e; mkdir -p /srv; cp /etc/config/app.conf /srv/app.conf; "
    "cd /srv && exec python3 -m http.server 8000 --bind 127.0.0.1"
)


def node_image_layer(agent: bytes) -> bytes:
    """The node image's one layer: ``vk-trio`` beside ``tmp/`` (``build/rootfs.sh``)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        folder = tarfile.TarInfo("tmp")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(folder)
        member = tarfile.TarInfo("vk-trio")
        member.size, member.mode = len(agent), 0o755
        tar.addfile(member, io.BytesIO(agent))
    return data.getvalue()


class ImageSims(NamedTuple):
    registry: RegistrySim
    vast: VastSim
    layer: str
    """The digest of the node image's layer."""


@pytest.fixture
async def image_sim(registry_sim: RegistrySim, vast_sim_factory: VastSimFactory) -> ImageSims:
    """The registry with the node's image, and a Vast simulator whose sandboxes reach it."""
    built = registry_sim.add_image(
        "vk-trio/vk-trio",
        "test",
        {"config": {"Entrypoint": ["/vk-trio", "run"]}},
        [node_image_layer(agent_bytes())],
    )
    port = int(registry_sim.host.rsplit(":", 1)[1])
    vast = await vast_sim_factory(run_containers=True, boot_seconds=0.2, reachable=[port])
    if not vast.runs_containers:
        pytest.fail(f"the sandbox cannot run here: {vast._sandbox_problem}")
    return ImageSims(registry_sim, vast, built.layers[-1])


@pytest.fixture
async def image_node(nursery: trio.Nursery, image_sim: ImageSims, cluster: Cluster) -> NodeRuntime:
    registry, vast, _ = image_sim
    settings = settings_for(
        vast.url, cluster.kubeconfig, agent_image=f"{registry.host}/vk-trio/vk-trio:test"
    )
    runtime: NodeRuntime = await nursery.start(serve_node, settings)
    return runtime


def _pod(namespace: str) -> Obj:
    pod = gpu_pod(
        "from-image",
        namespace,
        containers=[
            {
                "name": "app",
                "image": "busybox:1.36",
                "command": ["sh", "-c", SCRIPT],
                "ports": [{"containerPort": 8000}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ],
    )
    pod["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "app-config"}}]
    return pod


def _running(pod: Obj) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return phase(pod) == "Running" and bool(statuses) and "running" in statuses[0]["state"]


async def _config_map(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": cluster.namespace},
            "data": {"app.conf": "from=layer\n"},
        }
    )


async def test_the_pod_runs_under_the_agent_fetched_from_the_node_image_layer(
    image_node: NodeRuntime, image_sim: ImageSims, cluster: Cluster
) -> None:
    registry, vast, _ = image_sim
    tokens = registry.requests["token"]
    await _config_map(cluster)
    await cluster.create(_pod(cluster.namespace))
    pod = await wait_pod(cluster, "from-image", _running, within=60)
    endpoint = json.loads(pod["metadata"]["annotations"]["vast.ai/endpoints"])["8000/tcp"]
    with trio.fail_after(20):
        while True:
            try:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    response = await http.get(f"http://{endpoint}/app.conf")
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await trio.sleep(0.2)
    assert response.text == "from=layer\n"
    assert len(bought_for(vast, pod)) == 1
    env = json.dumps([request.get("env") for request in vast.create_requests()])
    assert AGENT_LAYER_ENV in env and AGENT_URL_ENV not in env
    assert registry.requests["token"] > tokens  # the bootstrap asked for its own token
    assert registry.requests["blob"] >= 1


async def test_a_tampered_layer_is_refused_inside_and_the_pod_says_so(
    image_node: NodeRuntime, image_sim: ImageSims, cluster: Cluster
) -> None:
    image_sim.registry.tamper_blob(image_sim.layer, node_image_layer(b"#!/bin/sh\necho evil\n"))
    await _config_map(cluster)
    await cluster.create(_pod(cluster.namespace))

    async def unavailable() -> Obj | None:
        pod = await cluster.get("pods", cluster.namespace, "from-image")
        return pod if pod and "AgentUnavailable" in await event_reasons(cluster, pod) else None

    with trio.fail_after(60):
        pod = await cluster.wait_for(unavailable)
    events = await cluster.list("events", cluster.namespace)
    said = [e["message"] for e in events if e["reason"] == "AgentUnavailable"]
    assert any("expected SHA-256" in message for message in said)
    statuses = json.dumps(pod.get("status", {}).get("containerStatuses") or [])
    assert f'"exitCode": {WRONG_CHECKSUM}' in statuses or phase(pod) != "Running"
