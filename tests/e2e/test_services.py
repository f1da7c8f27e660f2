"""End to end over real sockets: probes against the instance's public endpoint, and Services
that route to Vast pods through the EndpointSlices vk-trio writes.

The Vast simulator runs with ``serve_ports``: every running instance answers HTTP on its
mapped ports at 127.0.0.1 (503 for ``APP_READY_AFTER`` seconds, then 200; 500 under the
``app_unhealthy`` fault), so the node probes a real listener and the slices name addresses a
client can really reach. Only loopback traffic.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import Obj, bought_for, gpu_pod, phase, settings_for, wait_pod
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim

APP_READY_AFTER = 2.0
SERVICE = "june-gpu-services"


@pytest.fixture
def allow_loopback_endpoints() -> bool:
    """The instances listen on 127.0.0.1, which a real API server refuses in a slice: the
    stand-in is told to accept it (on a real cluster these tests cannot route)."""
    return True


@pytest.fixture
async def vast(vast_sim_factory: VastSimFactory) -> VastSim:
    return await vast_sim_factory(serve_ports=True, app_ready_after=APP_READY_AFTER)


@pytest.fixture
async def node(nursery: trio.Nursery, vast: VastSim, cluster: Cluster) -> NodeRuntime:
    runtime: NodeRuntime = await nursery.start(
        serve_node, settings_for(vast.url, cluster.kubeconfig)
    )
    return runtime


def app_pod(name: str, namespace: str, **probes: Obj) -> Obj:
    pod = gpu_pod(
        name,
        namespace,
        containers=[
            {
                "name": "stt",
                "image": "ghcr.io/example/stt:1",
                "ports": [{"containerPort": 8000, "name": "http"}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                **probes,
            }
        ],
    )
    pod["metadata"]["labels"] = {"app": SERVICE}
    return pod


READINESS: Obj = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}


def service(namespace: str, *, selector: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    metadata: Obj = {"name": SERVICE, "namespace": namespace}
    if selector is None:
        metadata["annotations"] = {"vast.ai/selector": f"app={SERVICE}"}
    else:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def public(pod: Obj) -> str:
    endpoints: dict[str, str] = json.loads(pod["metadata"]["annotations"]["vast.ai/endpoints"])
    return endpoints["8000/tcp"]


async def routed(cluster: Cluster) -> dict[str, bool]:
    """``ip:port`` → ready, over every slice of the Service."""
    found: dict[str, bool] = {}
    for item in await cluster.list("endpointslices", cluster.namespace):
        labels = item["metadata"].get("labels") or {}
        if labels.get("kubernetes.io/service-name") != SERVICE:
            continue
        assert labels["endpointslice.kubernetes.io/managed-by"] == "vk-trio.vast.ai"
        assert item["metadata"]["ownerReferences"][0]["kind"] == "Service"
        [port] = item["ports"]
        assert port["name"] == "http" and port["protocol"] == "TCP"
        for endpoint in item["endpoints"]:
            for address in endpoint["addresses"]:
                found[f"{address}:{port['port']}"] = endpoint["conditions"]["ready"]
    return found


async def wait_routed(cluster: Cluster, expected: dict[str, bool]) -> None:
    async def probe() -> bool | None:
        return True if await routed(cluster) == expected else None

    with trio.fail_after(15):
        await cluster.wait_for(probe)


async def test_a_loading_app_is_running_not_ready_and_routed_only_once_ready(
    node: NodeRuntime, vast: VastSim, cluster: Cluster
) -> None:
    await cluster.create(service(cluster.namespace))
    await cluster.create(app_pod("stt-0", cluster.namespace, readinessProbe=READINESS))
    pod = await wait_pod(cluster, "stt-0", lambda p: phase(p) == "Running")
    assert not ready(pod)  # the app answers 503 while it loads
    address = public(pod)
    assert address.startswith("127.0.0.1:")
    await wait_routed(cluster, {address: False})
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://{address}/")).status_code == 503
    pod = await wait_pod(cluster, "stt-0", ready)
    [container] = pod["status"]["containerStatuses"]
    assert container["ready"] is True and container["restartCount"] == 0
    await wait_routed(cluster, {address: True})
    async with httpx.AsyncClient() as client:  # what kube-proxy would forward to
        assert (await client.get(f"http://{address}/transcribe")).status_code == 200


async def test_a_dead_app_gets_a_new_instance_and_the_slice_follows(
    node: NodeRuntime, vast: VastSim, cluster: Cluster
) -> None:
    liveness: Obj = {
        "httpGet": {"path": "/healthz", "port": 8000},
        "initialDelaySeconds": 3,  # past APP_READY_AFTER
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    await cluster.create(service(cluster.namespace))
    await cluster.create(
        app_pod("stt-0", cluster.namespace, readinessProbe=READINESS, livenessProbe=liveness)
    )
    pod = await wait_pod(cluster, "stt-0", ready)
    first = public(pod)
    await wait_routed(cluster, {first: True})
    [bought] = bought_for(vast, pod)
    vast.set_faults(app_unhealthy=bought["id"])
    pod = await wait_pod(
        cluster, "stt-0", lambda p: p["status"]["containerStatuses"][0]["restartCount"] == 1
    )
    terminated = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "liveness probe failed: HTTP probe failed with statuscode: 500"
    events = await cluster.list("events", cluster.namespace)
    unhealthy = [e["message"] for e in events if e["reason"] == "Unhealthy"]
    assert "Liveness probe failed: HTTP probe failed with statuscode: 500" in unhealthy
    pod = await wait_pod(cluster, "stt-0", ready, within=20)
    second = public(pod)
    assert second != first and len(bought_for(vast, pod)) == 2
    assert vast.instance(bought["id"]) is None  # the dead one is no longer paid for
    await wait_routed(cluster, {second: True})


async def test_a_service_routes_to_both_pods_and_drops_a_deleted_one(
    node: NodeRuntime, vast: VastSim, cluster: Cluster
) -> None:
    await cluster.create(service(cluster.namespace))
    for name in ("stt-0", "stt-1"):
        await cluster.create(app_pod(name, cluster.namespace))
    pods = [await wait_pod(cluster, n, ready) for n in ("stt-0", "stt-1")]
    addresses = [public(p) for p in pods]
    assert addresses[0] != addresses[1]  # each instance has its own host port
    await wait_routed(cluster, {a: True for a in addresses})
    await cluster.delete("pods", cluster.namespace, "stt-1", grace=30)
    await wait_routed(cluster, {addresses[0]: True})


async def test_a_selector_service_over_vast_pods_is_warned(
    node: NodeRuntime, vast: VastSim, cluster: Cluster
) -> None:
    await cluster.create(app_pod("stt-0", cluster.namespace))
    await wait_pod(cluster, "stt-0", lambda p: phase(p) == "Running")
    await cluster.create(service(cluster.namespace, selector={"app": SERVICE}))

    async def warned() -> str | None:
        for event in await cluster.list("events", cluster.namespace):
            if event["involvedObject"]["kind"] == "Service" and event["type"] == "Warning":
                return str(event["message"])
        return None

    with trio.fail_after(15):
        message = await cluster.wait_for(warned)
    assert "vast.ai/selector" in message and "stt-0" in message
    assert await routed(cluster) == {}  # nothing written for a selector Service


async def test_an_outbid_pod_is_routed_not_ready_until_vast_resumes_it(
    node: NodeRuntime, vast: VastSim, cluster: Cluster
) -> None:
    await cluster.create(service(cluster.namespace))
    pod = app_pod("stt-0", cluster.namespace)
    pod["metadata"]["annotations"].update(
        {"vast.ai/interruptible": "true", "vast.ai/outbid-grace": "1h"}
    )
    await cluster.create(pod)
    pod = await wait_pod(cluster, "stt-0", ready)
    address = public(pod)
    await wait_routed(cluster, {address: True})
    [bought] = bought_for(vast, pod)
    vast.set_faults(outbid=bought["id"])
    await wait_routed(cluster, {address: False})
    vast.set_faults(resume=bought["id"])
    await wait_routed(cluster, {address: True})
