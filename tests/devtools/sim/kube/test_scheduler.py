"""The stand-in's scheduler: the fit rules as a table (selector, affinity, taints), then the
binding it performs over the real API (``PodScheduled``, Events, the ``binding`` subresource)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.kube.scheduler import AFFINITY_MISMATCH, choose, fit_error

Obj = dict[str, Any]

VK_TAINT = {"key": "virtual-kubelet.io/provider", "value": "vast", "effect": "NoSchedule"}
TOLERATE_VK = {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "vast"}


def node(
    name: str = "vk", *, ready: bool = True, taints: list[Obj] | None = None, **labels: str
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def pod(name: str = "p", **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec},
    }


def terms(*expressions: Obj, fields: list[Obj] | None = None) -> Obj:
    term: Obj = {"matchExpressions": list(expressions)}
    if fields:
        term["matchFields"] = fields
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def expr(key: str, operator: str, *values: str) -> Obj:
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


TAINTED = node(taints=[VK_TAINT], type="virtual-kubelet")

CASES = [
    ("no constraints, plain node", pod(), node(), None),
    ("selector matches", pod(nodeSelector={"type": "gpu"}), node(type="gpu"), None),
    (
        "selector value differs",
        pod(nodeSelector={"type": "gpu"}),
        node(type="cpu"),
        AFFINITY_MISMATCH,
    ),
    ("selector label missing", pod(nodeSelector={"type": "gpu"}), node(), AFFINITY_MISMATCH),
    ("In holds", pod(affinity=terms(expr("zone", "In", "a", "b"))), node(zone="b"), None),
    ("In fails", pod(affinity=terms(expr("zone", "In", "a"))), node(zone="c"), AFFINITY_MISMATCH),
    (
        "NotIn on a missing label holds",
        pod(affinity=terms(expr("type", "NotIn", "virtual-kubelet"))),
        node(),
        None,
    ),
    (
        "NotIn excludes the virtual node",
        pod(
            affinity=terms(expr("type", "NotIn", "virtual-kubelet")),
            tolerations=[{"operator": "Exists"}],
        ),
        TAINTED,
        AFFINITY_MISMATCH,
    ),
    ("Exists holds", pod(affinity=terms(expr("gpu", "Exists"))), node(gpu="1"), None),
    (
        "DoesNotExist fails",
        pod(affinity=terms(expr("gpu", "DoesNotExist"))),
        node(gpu="1"),
        AFFINITY_MISMATCH,
    ),
    ("Gt holds", pod(affinity=terms(expr("cores", "Gt", "4"))), node(cores="8"), None),
    ("Lt fails", pod(affinity=terms(expr("cores", "Lt", "4"))), node(cores="8"), AFFINITY_MISMATCH),
    (
        "matchFields metadata.name In",
        pod(affinity=terms(fields=[expr("metadata.name", "In", "vk")])),
        node("vk"),
        None,
    ),
    (
        "matchFields metadata.name NotIn",
        pod(affinity=terms(fields=[expr("metadata.name", "NotIn", "vk")])),
        node("vk"),
        AFFINITY_MISMATCH,
    ),
    ("an empty term matches nothing", pod(affinity=terms()), node(), AFFINITY_MISMATCH),
    (
        "untolerated NoSchedule taint",
        pod(nodeSelector={"type": "virtual-kubelet"}),
        TAINTED,
        "node(s) had untolerated taint {virtual-kubelet.io/provider: vast}",
    ),
    (
        "tolerated by key, value and effect",
        pod(tolerations=[{**TOLERATE_VK, "effect": "NoSchedule"}]),
        TAINTED,
        None,
    ),
    ("tolerated, empty effect matches all", pod(tolerations=[TOLERATE_VK]), TAINTED, None),
    (
        "wrong value is not tolerated",
        pod(tolerations=[{**TOLERATE_VK, "value": "aws"}]),
        TAINTED,
        "node(s) had untolerated taint {virtual-kubelet.io/provider: vast}",
    ),
    ("Exists with no key tolerates all", pod(tolerations=[{"operator": "Exists"}]), TAINTED, None),
    (
        "NoExecute needs tolerating too",
        pod(),
        node(taints=[{"key": "dedicated", "value": "x", "effect": "NoExecute"}]),
        "node(s) had untolerated taint {dedicated: x}",
    ),
    (
        "PreferNoSchedule is only a preference",
        pod(),
        node(taints=[{"key": "soft", "effect": "PreferNoSchedule"}]),
        None,
    ),
    (
        "a NotReady node",
        pod(),
        node(ready=False),
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
    ),
    (
        "a NotReady node, tolerated",
        pod(tolerations=[{"operator": "Exists"}]),
        node(ready=False),
        None,
    ),
]


@pytest.mark.parametrize(
    ("pod", "node", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fit(pod: Obj, node: Obj, error: str | None) -> None:
    assert fit_error(pod, node) == error


def test_choose_spreads_by_fewest_pods_then_name() -> None:
    nodes = [node("b"), node("a"), node("c", type="other")]
    assert choose(pod(), nodes, Counter()) == ("a", "")
    assert choose(pod(), nodes, Counter({"a": 2, "b": 1, "c": 1})) == ("b", "")
    picky = pod(nodeSelector={"type": "other"})
    assert choose(picky, nodes, Counter({"c": 9})) == ("c", "")


def test_choose_explains_why_nothing_fits() -> None:
    nodes = [node("a", type="cpu"), node("b", taints=[VK_TAINT]), node("c", taints=[VK_TAINT])]
    wanted = pod(nodeSelector={"type": "cpu"}, tolerations=[])
    assert choose(pod(), [], Counter()) == (None, "no nodes available to schedule pods")
    assert choose(wanted, nodes[1:], Counter()) == (
        None,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    )
    assert choose(pod(), [*nodes[1:], node("d", ready=False)], Counter()) == (
        None,
        "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: },"
        " 2 node(s) had untolerated taint {virtual-kubelet.io/provider: vast}.",
    )


# ----- over the API ------------------------------------------------------------------------

PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def client(kube_sim: KubeSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kube_sim.url, timeout=10) as http:
        yield http


def condition(sim: KubeSim, name: str) -> Obj | None:
    stored = sim.get("pods", "default", name) or {}
    conditions = (stored.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PodScheduled"), None)


def events(sim: KubeSim, name: str) -> list[tuple[str, str, str]]:
    """The Events about pod ``name``, in the order they were written."""
    about = [e for e in sim.list("events", "default") if e["involvedObject"]["name"] == name]
    about.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"], e["message"]) for e in about]


async def test_pending_pod_waits_unschedulable_then_binds_when_a_node_fits(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    kube_sim.create(node("worker", type="cpu"))
    created = await client.post(
        PODS, json=pod("gpu", nodeSelector={"type": "virtual-kubelet"}, tolerations=[TOLERATE_VK])
    )
    assert created.status_code == 201
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda s: condition(s, "gpu") is not None)
    message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    assert condition(kube_sim, "gpu") == {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": condition(kube_sim, "gpu")["lastTransitionTime"],  # type: ignore[index]
    }
    assert events(kube_sim, "gpu") == [("Warning", "FailedScheduling", message)]

    # A heartbeat changes nothing the scheduler looks at: no new attempt, no new Event.
    kube_sim.patch("nodes", None, "worker", {"metadata": {"annotations": {"beat": "1"}}})
    # The virtual node registers, tainted, not Ready yet: still no fit...
    kube_sim.create(node("vk", ready=False, taints=[VK_TAINT], type="virtual-kubelet"))
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda s: len(events(s, "gpu")) == 2)
    # ...then Ready: bound, in one write, with the scheduler's Event.
    kube_sim.patch(
        "nodes",
        None,
        "vk",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
    )
    with trio.fail_after(5):
        await kube_sim.wait_until(
            lambda s: (s.get("pods", "default", "gpu") or {})["spec"].get("nodeName")
        )
    bound = kube_sim.get("pods", "default", "gpu")
    assert bound is not None and bound["spec"]["nodeName"] == "vk"
    scheduled = condition(kube_sim, "gpu")
    assert scheduled is not None and scheduled["status"] == "True" and "reason" not in scheduled
    assert events(kube_sim, "gpu")[-1] == (
        "Normal",
        "Scheduled",
        "Successfully assigned default/gpu to vk",
    )
    assert len(events(kube_sim, "gpu")) == 3


async def test_pods_for_another_scheduler_or_already_bound_are_left_alone(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    kube_sim.create(node("vk"))
    await client.post(PODS, json=pod("custom", schedulerName="my-scheduler"))
    await client.post(
        PODS, json={**pod("direct"), "spec": {**pod()["spec"], "nodeName": "elsewhere"}}
    )
    await client.post(PODS, json=pod("mine"))
    with trio.fail_after(5):
        await kube_sim.wait_until(lambda s: condition(s, "mine") is not None)
    assert kube_sim.get("pods", "default", "custom")["spec"].get("nodeName") is None  # type: ignore[index]
    assert condition(kube_sim, "custom") is None
    # Created bound: no scheduler ran, so no PodScheduled (the kubelet adds it on a real cluster).
    assert condition(kube_sim, "direct") is None


async def test_binding_subresource_like_the_real_api(
    client: httpx.AsyncClient, kube_sim: KubeSim
) -> None:
    await client.post(PODS, json=pod("p", schedulerName="my-scheduler"))
    uid = kube_sim.get("pods", "default", "p")["metadata"]["uid"]  # type: ignore[index]
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": "n1"},
    }

    wrong_uid = await client.post(
        f"{PODS}/p/binding", json={**binding, "metadata": {"name": "p", "uid": "x"}}
    )
    assert wrong_uid.status_code == 409
    mismatch = await client.post(f"{PODS}/p/binding", json={**binding, "metadata": {"name": "q"}})
    assert mismatch.status_code == 400
    bound = await client.post(
        f"{PODS}/p/binding", json={**binding, "metadata": {"name": "p", "uid": uid}}
    )
    assert bound.status_code == 201 and bound.json()["status"] == "Success"
    stored = kube_sim.get("pods", "default", "p")
    assert stored is not None and stored["spec"]["nodeName"] == "n1"
    assert condition(kube_sim, "p")["status"] == "True"  # type: ignore[index]

    again = await client.post(f"{PODS}/p/binding", json=binding)
    assert again.status_code == 409
    assert again.json()["message"] == (
        'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "n1"'
    )
    missing = await client.post(
        f"{PODS}/nope/binding", json={**binding, "metadata": {"name": "nope"}}
    )
    assert missing.status_code == 404
    resources = (await client.get("/api/v1")).json()["resources"]
    assert {"name": "pods/binding", "verbs": ["create"]}.items() <= next(
        r for r in resources if r["name"] == "pods/binding"
    ).items()
