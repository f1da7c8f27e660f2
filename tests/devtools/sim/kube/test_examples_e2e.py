"""What the README's walkthrough promises, end to end: ``kubectl apply`` of every file in
``deployments/examples/`` against the stand-in, with kubectl's validation on, and a real node
(``serve_node`` against the Vast simulator) runs what the stand-in's scheduler and Deployment
controller hand it. Nothing is bound or expanded by the test: the Deployment's pod is created by
the stand-in's ReplicaSet, bound by its scheduler, and run by the node."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from tests.e2e.e2e import bought_for, settings_for
from tests.plugins.kube_sim import KUBECTL, Kubectl
from vk_trio.app import serve_node
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

EXAMPLES = Path(__file__).resolve().parents[4] / "deployments" / "examples"
NS = "june-services"


async def test_every_example_applies_validated_and_the_deployment_runs_on_the_node(
    nursery: trio.Nursery,
    kube_sim: KubeSim,
    kubeconfig: Path,
    kubectl: Kubectl,
    vast_sim: VastSim,
) -> None:
    settings = settings_for(vast_sim.url, kubeconfig, node_name="vast-gpu-node-python")
    await nursery.start(serve_node, settings)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        output = await kubectl("apply", "-f", str(path))  # --validate=strict, kubectl's default
        assert "created" in output, output

    rollout = await kubectl(
        "rollout", "status", "deployment/june-gpu-services", "-n", NS, "--timeout=60s"
    )
    assert 'deployment "june-gpu-services" successfully rolled out' in rollout
    deployments = await kubectl("get", "deploy", "-A")
    assert re.search(r"june-gpu-services\s+1/1\s+1\s+1\s", deployments), deployments

    [rs] = json.loads(await kubectl("get", "rs", "-n", NS, "-o", "json"))["items"]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"june-gpu-services-{pod_hash}"
    pods = json.loads(
        await kubectl("get", "pods", "-n", NS, "-l", "app=june-gpu-services", "-o", "json")
    )
    [pod] = pods["items"]
    assert re.fullmatch(rf"june-gpu-services-{pod_hash}-[a-z0-9]{{5}}", pod["metadata"]["name"])
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "ReplicaSet",
        rs["metadata"]["name"],
        True,
    )
    assert pod["spec"]["nodeName"] == "vast-gpu-node-python"
    assert pod["status"]["phase"] == "Running"
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True" and conditions["Ready"] == "True"

    described = await kubectl("describe", "pod", "-n", NS, pod["metadata"]["name"])
    assert re.search(r"Ports:\s+8000/TCP, 8001/TCP", described), described
    assert "Successfully assigned june-services/" in described
    assert "0001-01-01" not in described  # no zero timestamps (a cost may read 0.0001)

    # The DaemonSet's nodeAffinity keeps it off the virtual node (and no controller runs it).
    assert "vast-gpu-node-python" not in await kubectl(
        "get", "pods", "-n", "monitoring", "-o", "wide"
    )

    # Deleting the Deployment, as a user would: the garbage collector takes the ReplicaSet and
    # the pod (gracefully), the node destroys the instance and then lets the pod object go.
    [bought] = bought_for(vast_sim, pod)
    await kubectl("delete", "deployment", "june-gpu-services", "-n", NS)
    with trio.fail_after(30):
        await kube_sim.wait_until(
            lambda s: (
                not s.list("replicasets", NS) and s.get("pods", NS, pod["metadata"]["name"]) is None
            )
        )
    assert vast_sim.instance(bought["id"]) is None
    assert kube_sim.get("pods", NS, "llm-rtx3090") is not None  # not owned: not collected
