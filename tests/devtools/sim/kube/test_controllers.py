"""The stand-in's Deployment and ReplicaSet controllers and garbage collector, driven the way a
user drives them (``kubectl apply``/``scale``/``set image``/``rollout status``/``delete``), with
a scripted kubelet (``Kubelet``) that the tests pause to look at a rollout half-way."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from tests.plugins.kube_sim import KUBECTL, Kubectl
from vk_trio.devtools.sim.kube import KubeSim

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

Obj = dict[str, Any]
SMP = "application/strategic-merge-patch+json"


class Kubelet:
    """Plays the node ``vk`` for the stand-in: pods bound to it become Running and Ready, and a
    pod being deleted is removed (grace 0), each unless paused."""

    def __init__(self, sim: KubeSim) -> None:
        self.sim = sim
        self.start_pods = True
        self.finish_deletions = True

    async def run(self) -> None:
        while True:
            for pod in self.sim.list("pods"):
                meta = pod["metadata"]
                if pod["spec"].get("nodeName") != "vk":
                    continue
                if meta.get("deletionTimestamp"):
                    if self.finish_deletions:
                        self.sim.delete("pods", meta["namespace"], meta["name"], grace_seconds=0)
                elif self.start_pods and pod["status"].get("phase") != "Running":
                    status = {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                    self.sim.patch(
                        "pods",
                        meta["namespace"],
                        meta["name"],
                        {"status": status},
                        content_type=SMP,
                        subresource="status",
                    )
            await self.sim.store.changed()

    def resume(self) -> None:
        """Re-check now (after flipping a switch): a write wakes ``run``."""
        self.sim.store.notify()


@pytest.fixture
async def kubelet(nursery: trio.Nursery, kube_sim: KubeSim) -> AsyncIterator[Kubelet]:
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "vk"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    player = Kubelet(kube_sim)
    nursery.start_soon(player.run)
    yield player


def deployment(replicas: int, strategy: Obj, image: str = "nginx:1.27") -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": image, "ports": [{"containerPort": 8000}]}
                    ]
                },
            },
        },
    }


async def apply(kubectl: Kubectl, tmp_path: Path, obj: Obj) -> str:
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(obj))
    return await kubectl("apply", "-f", str(path))


def replicasets(sim: KubeSim) -> dict[str, int]:
    """ReplicaSet name -> spec.replicas."""
    return {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in sim.list("replicasets")}


def live_pods(sim: KubeSim) -> list[Obj]:
    return [p for p in sim.list("pods") if not p["metadata"].get("deletionTimestamp")]


async def settle(sim: KubeSim, check: Any) -> None:
    with trio.fail_after(10):
        await sim.wait_until(check)


async def test_deployment_makes_a_hashed_replicaset_that_keeps_its_pods(
    kube_sim: KubeSim, kubelet: Kubelet, kubectl: Kubectl, tmp_path: Path
) -> None:
    rolling = {"type": "RollingUpdate"}
    await apply(kubectl, tmp_path, deployment(2, rolling))
    status = await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert 'deployment "web" successfully rolled out' in status
    [rs] = kube_sim.list("replicasets")
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}" and re.fullmatch(r"[b-z2-9]+", pod_hash)
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    [owner] = rs["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
    pods = live_pods(kube_sim)
    assert len(pods) == 2
    for pod in pods:
        assert re.fullmatch(
            rf"web-{pod_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", pod["metadata"]["name"]
        )
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["spec"]["nodeName"] == "vk"  # bound by the stand-in's scheduler
    deploy = kube_sim.get("deployments", "default", "web")
    assert deploy is not None
    assert {k: v for k, v in deploy["status"].items() if k != "conditions"} == {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    conditions = {c["type"]: (c["status"], c["reason"]) for c in deploy["status"]["conditions"]}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    assert re.search(r"^web\s+2/2\s+2\s+2\s", await kubectl("get", "deploy"), re.M)
    assert re.search(r"^web-\w+\s+2\s+2\s+2\s", await kubectl("get", "rs"), re.M)

    # A pod deleted is replaced; scaling up and down adds and removes pods.
    victim = pods[0]["metadata"]["name"]
    await kubectl("delete", "pod", victim)
    await settle(
        kube_sim,
        lambda s: (
            len(live_pods(s)) == 2 and victim not in {p["metadata"]["name"] for p in s.list("pods")}
        ),
    )
    await kubectl("scale", "deployment/web", "--replicas=3")
    await settle(kube_sim, lambda s: len(live_pods(s)) == 3)
    await kubectl("scale", "deployment/web", "--replicas=1")
    await settle(kube_sim, lambda s: len(s.list("pods")) == 1)
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert replicasets(kube_sim) == {rs["metadata"]["name"]: 1}
    events = {(e["reason"], e["involvedObject"]["kind"]) for e in kube_sim.list("events")}
    assert {
        ("ScalingReplicaSet", "Deployment"),
        ("SuccessfulCreate", "ReplicaSet"),
        ("SuccessfulDelete", "ReplicaSet"),
        ("Scheduled", "Pod"),
    } <= events


async def test_rolling_update_surges_then_retires_the_old_replicaset(
    kube_sim: KubeSim, kubelet: Kubelet, kubectl: Kubectl, tmp_path: Path
) -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    await apply(kubectl, tmp_path, deployment(2, rolling))
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    [old] = replicasets(kube_sim)

    kubelet.start_pods = False  # the new pods stay Pending: the rollout must wait for them
    await kubectl("set", "image", "deployment/web", "web=nginx:1.28")
    await settle(kube_sim, lambda s: len(replicasets(s)) == 2)
    [new] = set(replicasets(kube_sim)) - {old}
    await settle(kube_sim, lambda s: len(s.list("pods")) == 3)
    # One surge pod, no old pod taken away while the new one is not available.
    assert replicasets(kube_sim) == {old: 2, new: 1}
    deploy = kube_sim.get("deployments", "default", "web")
    assert (
        deploy is not None
        and deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    )
    code_status = deploy["status"]
    assert (code_status["updatedReplicas"], code_status["availableReplicas"]) == (1, 2)

    kubelet.start_pods = True
    kubelet.resume()
    status = await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert 'deployment "web" successfully rolled out' in status
    assert replicasets(kube_sim) == {old: 0, new: 2}
    images = {p["spec"]["containers"][0]["image"] for p in kube_sim.list("pods")}
    assert images == {"nginx:1.28"}
    history = await kubectl("rollout", "history", "deployment/web")
    assert re.search(r"^1\s", history, re.M) and re.search(r"^2\s", history, re.M)

    # Undo: the first ReplicaSet's template again, so that ReplicaSet comes back as revision 3.
    await kubectl("rollout", "undo", "deployment/web")
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert replicasets(kube_sim) == {old: 2, new: 0}
    revived = kube_sim.get("replicasets", "default", old)
    assert revived is not None
    assert revived["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    images = {p["spec"]["containers"][0]["image"] for p in live_pods(kube_sim)}
    assert images == {"nginx:1.27"}


async def test_recreate_starts_the_new_pods_only_once_the_old_ones_are_gone(
    kube_sim: KubeSim, kubelet: Kubelet, kubectl: Kubectl, tmp_path: Path
) -> None:
    await apply(kubectl, tmp_path, deployment(1, {"type": "Recreate"}))
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    [old] = replicasets(kube_sim)
    [old_pod] = kube_sim.list("pods")

    kubelet.finish_deletions = False  # the old pod stays Terminating (its GPU being released)
    await apply(kubectl, tmp_path, deployment(1, {"type": "Recreate"}, image="nginx:1.28"))
    await settle(kube_sim, lambda s: replicasets(s) == {old: 0})
    await settle(kube_sim, lambda s: s.list("pods")[0]["metadata"].get("deletionTimestamp"))
    await trio.sleep(0.2)  # time for a wrong controller to start the new pod anyway
    assert replicasets(kube_sim) == {old: 0}
    assert [p["metadata"]["name"] for p in kube_sim.list("pods")] == [old_pod["metadata"]["name"]]

    kubelet.finish_deletions = True
    kubelet.resume()
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert len(replicasets(kube_sim)) == 2
    [pod] = kube_sim.list("pods")
    assert pod["spec"]["containers"][0]["image"] == "nginx:1.28"


async def test_deleting_a_deployment_collects_its_replicasets_and_pods(
    kube_sim: KubeSim, kubelet: Kubelet, kubectl: Kubectl, tmp_path: Path
) -> None:
    await apply(kubectl, tmp_path, deployment(2, {"type": "RollingUpdate"}))
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    # A pod with a second, living owner only loses the reference.
    [pod] = kube_sim.list("pods")[:1]
    holder = kube_sim.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "holder"}}
    )
    refs = [
        *pod["metadata"]["ownerReferences"],
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "holder",
            "uid": holder["metadata"]["uid"],
        },
    ]
    kube_sim.patch(
        "pods", "default", pod["metadata"]["name"], {"metadata": {"ownerReferences": refs}}
    )

    kubelet.finish_deletions = False
    output = await kubectl("delete", "deployment", "web")
    assert 'deployment.apps "web" deleted' in output
    await settle(kube_sim, lambda s: not s.list("replicasets"))
    # Bound pods are deleted gracefully: Terminating until their node is done with them.
    await settle(
        kube_sim,
        lambda s: len([p for p in s.list("pods") if p["metadata"].get("deletionTimestamp")]) == 1,
    )
    [kept] = live_pods(kube_sim)
    assert kept["metadata"]["name"] == pod["metadata"]["name"]
    assert [r["kind"] for r in kept["metadata"]["ownerReferences"]] == ["ConfigMap"]
    kubelet.finish_deletions = True
    kubelet.resume()
    await settle(kube_sim, lambda s: len(s.list("pods")) == 1)
    listed = json.loads(await kubectl("get", "deploy,rs", "-o", "json"))
    assert listed["items"] == []


async def test_orphan_keeps_the_pods_and_foreground_waits_for_them(
    kube_sim: KubeSim, kubelet: Kubelet, kubectl: Kubectl, tmp_path: Path
) -> None:
    await apply(kubectl, tmp_path, deployment(1, {"type": "RollingUpdate"}))
    await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    [pod] = kube_sim.list("pods")

    # --cascade=orphan: the Deployment goes, its ReplicaSet stays, without the owner.
    await kubectl("delete", "deployment", "web", "--cascade=orphan")
    await settle(kube_sim, lambda s: s.get("deployments", "default", "web") is None)
    [rs] = kube_sim.list("replicasets")
    assert "ownerReferences" not in rs["metadata"] or rs["metadata"]["ownerReferences"] == []
    assert [p["metadata"]["uid"] for p in live_pods(kube_sim)] == [pod["metadata"]["uid"]]

    # --cascade=foreground: the ReplicaSet stays, marked, until its pod is gone.
    kubelet.finish_deletions = False
    name = rs["metadata"]["name"]
    await kubectl("delete", "rs", name, "--cascade=foreground", "--wait=false")
    await settle(kube_sim, lambda s: s.list("pods")[0]["metadata"].get("deletionTimestamp"))
    waiting = kube_sim.get("replicasets", "default", rs["metadata"]["name"])
    assert waiting is not None and waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert waiting["metadata"].get("deletionTimestamp")
    kubelet.finish_deletions = True
    kubelet.resume()
    await settle(kube_sim, lambda s: not s.list("pods") and not s.list("replicasets"))
