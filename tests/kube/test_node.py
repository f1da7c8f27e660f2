"""Node registration and status against the API stand-in over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeForbidden
from vk_trio.kube.node import NodeConfig, NodeStatusReporter, run_node_status
from vk_trio.kubelet.streaming.declared_features import declared_features

NAME = "vk-vast"


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


def config(**overrides: Any) -> NodeConfig:
    return NodeConfig(name=NAME, internal_ip="10.1.2.3", **overrides)


def conditions(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in node["status"]["conditions"]}


async def test_register_creates_a_complete_node(kube: KubeClient, kube_sim: KubeSim) -> None:
    uid = await NodeStatusReporter(
        kube, config(capacity={"cpu": "8", "nvidia.com/gpu": "2"})
    ).register()
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    assert node["metadata"]["uid"] == uid
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/hostname"] == NAME
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
    assert node["spec"]["taints"] == [
        {"key": "virtual-kubelet.io/provider", "value": "vast", "effect": "NoSchedule"}
    ]
    status = node["status"]
    assert status["capacity"] == {"cpu": "8", "nvidia.com/gpu": "2"}
    assert status["allocatable"] == status["capacity"]
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.1.2.3"}]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.31.0-vk-trio-")
    assert status["nodeInfo"]["operatingSystem"] == "linux"
    assert status["nodeInfo"]["architecture"] == "amd64"
    found = conditions(node)
    assert set(found) == {
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    }
    assert found["Ready"]["status"] == "False"  # not ready until the first report says so
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"):
        assert found[kind]["status"] == "False"
        assert found[kind]["reason"]
        assert found[kind]["lastHeartbeatTime"].endswith("Z")


async def test_report_keeps_foreign_conditions_and_transition_times(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    reporter = NodeStatusReporter(kube, config())
    await reporter.register()
    foreign = {
        "type": "GPUHealthy",
        "status": "True",
        "reason": "NPD",
        "message": "from node-problem-detector",
    }
    kube_sim.patch(
        "nodes",
        None,
        NAME,
        {"status": {"conditions": [foreign]}},
        content_type="application/strategic-merge-patch+json",
        subresource="status",
    )
    await reporter.report(ready=True, message="kubelet is posting ready status")
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    found = conditions(node)
    assert found["GPUHealthy"]["message"] == "from node-problem-detector"
    ready = found["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert ready["message"] == "kubelet is posting ready status"
    first_transition = ready["lastTransitionTime"]
    pressure_transition = found["MemoryPressure"]["lastTransitionTime"]

    await trio.sleep(1.05)  # timestamps have second precision
    await reporter.report(ready=True, message="kubelet is posting ready status")
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    found = conditions(node)
    assert found["Ready"]["lastTransitionTime"] == first_transition
    assert found["Ready"]["lastHeartbeatTime"] > first_transition
    assert found["MemoryPressure"]["lastTransitionTime"] == pressure_transition

    await reporter.report(ready=False, message="vast API unreachable")
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    ready = conditions(node)["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "KubeletNotReady",
        "vast API unreachable",
    )
    assert ready["lastTransitionTime"] > first_transition


async def test_register_adopts_existing_node(kube: KubeClient, kube_sim: KubeSim) -> None:
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NAME, "labels": {"team": "ml", "type": "old"}},
            "spec": {"taints": [{"key": "admin", "effect": "NoExecute"}]},
        }
    )
    existing = kube_sim.get("nodes", None, NAME)
    assert existing is not None
    uid = await NodeStatusReporter(kube, config(labels={"extra": "yes"})).register()
    assert uid == existing["metadata"]["uid"]
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["team"] == "ml"
    assert labels["type"] == "virtual-kubelet"
    assert labels["extra"] == "yes"
    keys = [t["key"] for t in node["spec"]["taints"]]
    assert keys == ["admin", "virtual-kubelet.io/provider"]
    assert conditions(node)["Ready"]["status"] == "False"

    # Registering again changes nothing (the taint is not added twice).
    await NodeStatusReporter(kube, config()).register()
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    assert len(node["spec"]["taints"]) == 2


async def test_report_recreates_a_deleted_node(kube: KubeClient, kube_sim: KubeSim) -> None:
    reporter = NodeStatusReporter(kube, config())
    first = await reporter.register()
    kube_sim.delete("nodes", None, NAME)
    await reporter.report(ready=True, message="")
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    assert reporter.uid == node["metadata"]["uid"] != first
    assert conditions(node)["Ready"]["status"] == "True"


async def test_run_node_status_reports_health_changes(
    kube: KubeClient, kube_sim: KubeSim, nursery: trio.Nursery
) -> None:
    reporter = NodeStatusReporter(kube, config())
    await reporter.register()
    health = [(True, "")]

    def ready_is(status: str) -> bool:
        node = kube_sim.get("nodes", None, NAME)
        return node is not None and conditions(node)["Ready"]["status"] == status

    await nursery.start(
        lambda task_status: run_node_status(
            kube,
            reporter,
            interval=3600,
            health=lambda: health[-1],
            check_interval=0.02,
            task_status=task_status,
        )
    )
    assert ready_is("True")
    patches = kube_sim.requests["PATCH /api/v1/nodes/{name}/status"]
    health.append((False, "provider ping failed"))
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda: ready_is("False"))
    await trio.sleep(0.1)  # several checks with unchanged health: no more patches
    assert kube_sim.requests["PATCH /api/v1/nodes/{name}/status"] == patches + 1


async def test_first_report_escalates_permanent_errors() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"kind": "Status", "message": "nodes is forbidden"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(forbidden), base_url="http://kube")
    async with KubeClient(http) as client:
        reporter = NodeStatusReporter(client, config())
        with pytest.raises(KubeForbidden):
            await reporter.register()
        with pytest.raises(KubeForbidden):
            await run_node_status(client, reporter, health=lambda: (True, ""))


async def test_declared_features_reach_the_node_status_only_when_declared(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    """The stand-in keeps the 1.36 field (it plays a 1.36 server for streaming); a node
    that declares nothing leaves it out rather than writing an empty list."""
    features = declared_features(websocket_streaming=True)
    reporter = NodeStatusReporter(kube, config(declared_features=features))
    await reporter.register()
    await reporter.report(ready=True, message="")
    node = kube_sim.get("nodes", None, NAME)
    assert node is not None
    assert node["status"]["declaredFeatures"] == ["ExtendWebSocketsToKubelet"]
    plain = NodeStatusReporter(kube, config())
    assert "declaredFeatures" not in plain.status_body(ready=True, message="")
