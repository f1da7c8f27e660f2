"""The EndpointSlice controller's decisions, as pure functions: label selectors, how a
Service's ports map to each pod's public host ports, one slice per distinct mapping, and
``kubectl get endpointslices`` on what it writes (when kubectl is installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from tests.devtools.sim.kube.test_kubectl import rows
from tests.plugins.kube_sim import KUBECTL, Kubectl
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.events import EventRecorder
from vk_trio.kube.models import Pod, Service
from vk_trio.kube.watch import PodEvent
from vk_trio.node.endpoints import EndpointsController, _slice_bodies, parse_selector

Obj = dict[str, Any]


@pytest.mark.parametrize(
    ("selector", "labels", "matched"),
    [
        ("app=stt", {"app": "stt"}, True),
        ("app==stt", {"app": "tts"}, False),
        ("app=stt,tier!=db", {"app": "stt", "tier": "db"}, False),
        ("app in (stt, tts),!legacy", {"app": "tts"}, True),
        ("app in (stt, tts),!legacy", {"app": "tts", "legacy": "1"}, False),
        ("app notin (stt),gpu", {"app": "tts", "gpu": "1"}, True),
        ("app notin (stt),gpu", {"app": "tts"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], matched: bool) -> None:
    assert parse_selector(selector).matches(labels) is matched


@pytest.mark.parametrize("bad", ["", " , ", "app in stt", "=x"])
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(bad)


def pod(name: str, endpoints: dict[str, str], *, ready: bool = True) -> Pod:
    obj = {
        "metadata": {
            "name": name,
            "namespace": "june",
            "uid": f"uid-{name}",
            "labels": {"app": "stt"},
            "annotations": {"vast.ai/endpoints": json.dumps(endpoints)},
        },
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"containerPort": 8000, "name": "stt"},
                        {"containerPort": 8001, "name": "tts"},
                    ],
                }
            ]
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    return msgspec.convert(obj, Pod)


SERVICE = msgspec.convert(
    {
        "metadata": {"name": "gpu", "namespace": "june", "uid": "svc-uid"},
        "spec": {
            "ports": [
                {"name": "stt", "port": 80, "targetPort": "stt"},
                {"name": "tts", "port": 81, "targetPort": 8001},
            ]
        },
    },
    Service,
)


def test_one_slice_per_distinct_port_mapping() -> None:
    pods = [
        pod("a", {"8000/tcp": "127.0.0.1:41000", "8001/tcp": "127.0.0.1:41001"}),
        pod("b", {"8000/tcp": "127.0.0.2:41000", "8001/tcp": "127.0.0.2:41001"}, ready=False),
        pod("c", {"8000/tcp": "127.0.0.3:52000", "8001/tcp": "127.0.0.3:52001"}),
        pod("d", {}),  # not running yet: nothing to route to
    ]
    slices = _slice_bodies(SERVICE, pods, "vk")
    assert len(slices) == 2
    by_ports = {tuple(p["port"] for p in s["ports"]): s for s in slices}
    shared = by_ports[41000, 41001]
    assert [p["name"] for p in shared["ports"]] == ["stt", "tts"]
    assert [(e["addresses"], e["conditions"]["ready"]) for e in shared["endpoints"]] == [
        (["127.0.0.1"], True),
        (["127.0.0.2"], False),
    ]
    assert [e["targetRef"]["name"] for e in by_ports[52000, 52001]["endpoints"]] == ["c"]
    for body in slices:
        assert body["addressType"] == "IPv4"
        assert body["metadata"]["labels"] == {
            "kubernetes.io/service-name": "gpu",
            "endpointslice.kubernetes.io/managed-by": "vk-trio.vast.ai",
        }
        assert body["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert _slice_bodies(SERVICE, pods, "vk") == slices  # names are stable: no churn


def test_a_port_the_pod_does_not_publish_is_left_out() -> None:
    [body] = _slice_bodies(SERVICE, [pod("a", {"8000/tcp": "127.0.0.1:41000"})], "vk")
    assert body["ports"] == [{"name": "stt", "port": 41000, "protocol": "TCP"}]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_kubectl_get_endpointslices(kube_sim: KubeSim, kubectl: Kubectl) -> None:
    kube_sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "june"}})
    pods = [pod(n, {"8000/tcp": f"203.0.113.{i}:41000"}) for i, n in enumerate("abcd", 1)]
    for body in _slice_bodies(SERVICE, pods, "vk"):
        kube_sim.create(body)
    output = await kubectl("get", "endpointslices", "-n", "june")
    [header, row] = rows(output)
    assert header == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert row[1:4] == ["IPv4", "41000", "203.0.113.1,203.0.113.2,203.0.113.3 + 1 more..."]


CREATE_SLICE = "POST /apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


async def test_a_refused_slice_is_told_on_the_service_once_and_not_retried(
    jumpy_clock: MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Issue 20: a real server refuses a slice naming 127.0.0.1 (422, permanent). The
    Service gets one Warning Event with the server's words; the same slice is not sent
    again (no retry on a backoff) until what it should hold changes."""
    sim = KubeSim(bookmark_interval=60.0)  # the default: loopback refused, as on a cluster
    await nursery.start(sim.serve)
    sim.write_kubeconfig(tmp_path / "kubeconfig")
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "june"}})
    service = sim.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "gpu",
                "namespace": "june",
                "annotations": {"vast.ai/selector": "app=stt"},
            },
            "spec": {"ports": [{"name": "stt", "port": 80, "targetPort": "stt"}]},
        }
    )

    def warnings(sim: KubeSim) -> list[Obj]:
        return [
            e
            for e in sim.list("events", "june")
            if e["involvedObject"]["kind"] == "Service" and e["type"] == "Warning"
        ]

    async with KubeClient.from_config(
        await load_config(kubeconfig=str(tmp_path / "kubeconfig"))
    ) as kube:
        controller = EndpointsController(kube, EventRecorder(kube, host="vk"), node_name="vk")
        await nursery.start(controller.run)
        controller.pod_event(PodEvent(type="ADDED", pod=pod("a", {"8000/tcp": "127.0.0.1:41000"})))
        controller.pod_event(PodEvent(type="SYNCED"))
        with trio.fail_after(30):
            await sim.wait_until(warnings)
        [event] = warnings(sim)
        assert event["involvedObject"]["uid"] == service["metadata"]["uid"]
        assert event["reason"] == "FailedToUpdateEndpointSlices"
        assert event["message"].startswith("Error updating Endpoint Slices for Service june/gpu: ")
        assert event["message"].endswith(
            '"127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'
        )
        attempts = sim.requests[CREATE_SLICE]
        controller.pod_event(PodEvent(type="MODIFIED", pod=pod("b", {})))  # nothing to route
        await trio.sleep(600)  # virtual: a retry schedule would have sent it ten times
        assert sim.requests[CREATE_SLICE] == attempts
        assert [e["count"] for e in warnings(sim)] == [1]

        # What the slice should hold changes: it is sent again, and this time stored.
        controller.pod_event(
            PodEvent(type="MODIFIED", pod=pod("a", {"8000/tcp": "203.0.113.7:41000"}))
        )
        with trio.fail_after(30):
            await sim.wait_until(lambda s: s.list("endpointslices", "june"))
        [stored] = sim.list("endpointslices", "june")
        assert stored["endpoints"][0]["addresses"] == ["203.0.113.7"]
        nursery.cancel_scope.cancel()
