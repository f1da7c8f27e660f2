"""End to end: the real node (``serve_node``, the code path of ``vk-trio run``) against the Vast
simulator and a Kubernetes API, over real sockets.

The API is the in-process stand-in, or a real cluster when ``VK_TRIO_TEST_KUBECONFIG`` names a
kubeconfig (see ``cluster.py``). Outcomes are read where a user would read them: the pod
object (phase, container statuses, annotations), its Events, and the simulator's ledger of
every instance ever bought.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from loguru import logger

from tests.devtools.sim.kube.test_kubectl import rows
from tests.e2e.cluster import Cluster
from tests.e2e.e2e import (
    H100_OFFER,
    NODE,
    Obj,
    bought_for,
    delete_and_wait_gone,
    event_reasons,
    gpu_pod,
    phase,
    settings_for,
    wait_event,
    wait_pod,
    waiting_reason,
)
from tests.plugins.kube_sim import KUBECTL
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.vast import VastAuthError


async def test_pod_runs_with_address_then_delete_destroys_instance(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    await cluster.create(gpu_pod("web", cluster.namespace))
    pod = await wait_pod(cluster, "web", lambda p: phase(p) == "Running")

    [bought] = bought_for(vast_sim, pod)
    instance = vast_sim.instance(bought["id"])
    assert instance is not None
    address = instance["public_ipaddr"].strip()
    status = pod["status"]
    assert status["podIP"] == address and status["podIPs"] == [{"ip": address}]
    [container] = status["containerStatuses"]
    assert container["ready"] is True and set(container["state"]) == {"running"}
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["PodScheduled"] == "True"
    notes = pod["metadata"]["annotations"]
    assert notes["vast.ai/instance-id"] == str(bought["id"])
    host_port = instance["ports"]["8000/tcp"][0]["HostPort"]
    assert f'"8000/tcp":"{address}:{host_port}"' in notes["vast.ai/endpoints"]
    await wait_event(cluster, pod, "InstanceReady")
    reasons = await event_reasons(cluster, pod)
    for reason in ("OfferMatched", "InstanceBought"):
        assert reason in reasons

    await delete_and_wait_gone(cluster, "web")
    [entry] = bought_for(vast_sim, pod)
    assert entry["destroyed_at"] is not None
    assert vast_sim.live_instances() == []


async def test_bad_annotation_is_reported_and_buys_nothing_until_fixed(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    annotations = {"vast.ai/price-max": "cheap"}
    await cluster.create(gpu_pod("bad", cluster.namespace, annotations=annotations))
    pod = await wait_pod(cluster, "bad", lambda p: waiting_reason(p) == "InvalidAnnotation")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "vast.ai/price-max" in message and "cheap" in message
    await wait_event(cluster, pod, "InvalidAnnotation")
    assert vast_sim.ledger() == []

    fixed = {"metadata": {"annotations": {"vast.ai/price-max": "2"}}}
    await cluster.patch("pods", cluster.namespace, "bad", fixed)
    pod = await wait_pod(cluster, "bad", lambda p: phase(p) == "Running")
    assert len(bought_for(vast_sim, pod)) == 1


async def test_no_offers_keeps_pod_pending_until_an_offer_appears(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    vast_sim.remove_offers(lambda row: row.get("gpu_name") == "H100 SXM")
    annotations = {"vast.ai/gpu-type": "H100 SXM", "vast.ai/gpu-fallbacks": ""}
    await cluster.create(gpu_pod("h100", cluster.namespace, annotations=annotations))
    pod = await wait_pod(cluster, "h100", lambda p: waiting_reason(p) == "NoMatchingOffers")
    assert phase(pod) == "Pending"
    await wait_event(cluster, pod, "NoMatchingOffers")

    vast_sim.add_offers([H100_OFFER])
    pod = await wait_pod(cluster, "h100", lambda p: phase(p) == "Running")
    [entry] = bought_for(vast_sim, pod)
    assert entry["gpu_name"] == "H100 SXM"


async def test_a_price_cap_below_the_market_says_so(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    annotations = {
        "vast.ai/gpu-type": "RTX 4090",
        "vast.ai/gpu-fallbacks": "",
        "vast.ai/price-max": "0.01",
    }
    await cluster.create(gpu_pod("cheap", cluster.namespace, annotations=annotations))
    pod = await wait_pod(cluster, "cheap", lambda p: waiting_reason(p) == "PriceCapExceeded")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "vast.ai/price-max" in message  # the constraint that ruled out the most
    await wait_event(cluster, pod, "PriceCapExceeded")
    assert vast_sim.ledger() == []


async def test_watch_expiry_relists_without_buying_twice(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    sim = cluster.require_sim()
    await cluster.create(gpu_pod("first", cluster.namespace))
    first = await wait_pod(cluster, "first", lambda p: phase(p) == "Running")
    sim.compact()
    sim.close_watches()
    await cluster.create(gpu_pod("second", cluster.namespace))
    second = await wait_pod(cluster, "second", lambda p: phase(p) == "Running")
    assert len(bought_for(vast_sim, first)) == 1
    assert len(bought_for(vast_sim, second)) == 1
    assert len(vast_sim.ledger()) == 2


async def test_lease_and_node_stay_fresh_while_vast_hangs(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    await nursery.start(serve_node, settings_for(vast_sim.url, cluster.kubeconfig, lease_seconds=2))
    vast_sim.set_faults(latency=60.0)  # every Vast call now hangs for a minute
    await cluster.create(gpu_pod("stuck", cluster.namespace))

    async def renew_time() -> str:
        lease = await cluster.get("leases", "kube-node-lease", NODE) or {}
        return str(lease.get("spec", {}).get("renewTime"))

    seen = {await renew_time()}
    with trio.fail_after(10):
        for _ in range(3):  # three renewals while every Vast call is stuck

            async def renewed() -> str | None:
                now = await renew_time()
                return None if now in seen else now

            seen.add(await cluster.wait_for(renewed))
    node_obj = await cluster.get("nodes", None, NODE) or {}
    ready = [c for c in node_obj["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"


async def test_fifty_pods_cost_one_list_call_per_page_per_sweep(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    vast_sim.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=0.4)] * 60)
    for i in range(50):
        await cluster.create(gpu_pod(f"batch-{i}", cluster.namespace))

    async def all_running() -> bool | None:
        pods = await cluster.list("pods", cluster.namespace)
        return True if sum(phase(p) == "Running" for p in pods) == 50 else None

    with trio.fail_after(60):
        await cluster.wait_for(all_running)
    assert len(vast_sim.ledger()) == 50

    def list_calls() -> int:
        return vast_sim.stats().get("GET /api/v1/instances/", 0)

    # Steady state: only the poller lists, and 50 instances are two pages of 25.
    await node.poller.fresh()
    sweeps, calls = node.poller.sweeps, list_calls()
    with trio.fail_after(10):
        for _ in range(5):
            await node.poller.fresh()
    done_sweeps, done_calls = node.poller.sweeps - sweeps, list_calls() - calls
    assert done_sweeps >= 5
    # the next sweep may already be under way (one or two pages in)
    assert 2 * done_sweeps <= done_calls <= 2 * done_sweeps + 2


async def test_restarted_node_adopts_instances_instead_of_buying(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    settings = settings_for(vast_sim.url, cluster.kubeconfig)
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            await cluster.create(gpu_pod("survivor", cluster.namespace))
            await wait_pod(cluster, "survivor", lambda p: phase(p) == "Running")
            first_run.cancel()
    assert len(vast_sim.live_instances()) == 1  # a stopping node destroys nothing

    second = await nursery.start(serve_node, settings)
    for _ in range(3):  # several sweeps of the new process, each a chance to buy again
        await second.poller.fresh()
    pod = await cluster.get("pods", cluster.namespace, "survivor")
    assert pod is not None and phase(pod) == "Running"
    assert len(vast_sim.ledger()) == 1

    await delete_and_wait_gone(cluster, "survivor")
    assert vast_sim.live_instances() == []


async def test_lost_create_answer_is_recovered_by_label(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    vast_sim.set_faults(lose_create_response=1.0)
    await cluster.create(gpu_pod("lost", cluster.namespace))
    with trio.fail_after(15):
        await vast_sim.wait_until(lambda s: s.created >= 1)
    vast_sim.set_faults(lose_create_response=0.0)
    pod = await wait_pod(cluster, "lost", lambda p: phase(p) == "Running", within=30)
    assert len(bought_for(vast_sim, pod)) == 1


async def test_exit_with_restart_never_fails_the_pod(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    await cluster.create(gpu_pod("job", cluster.namespace, restart_policy="Never"))
    pod = await wait_pod(cluster, "job", lambda p: phase(p) == "Running")
    [entry] = bought_for(vast_sim, pod)
    vast_sim.exit_instance(entry["id"], code=3)
    pod = await wait_pod(cluster, "job", lambda p: phase(p) == "Failed")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda s: not s.live_instances())


async def test_exit_with_restart_always_buys_a_new_instance(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    await cluster.create(gpu_pod("svc", cluster.namespace))
    pod = await wait_pod(cluster, "svc", lambda p: phase(p) == "Running")
    [first] = bought_for(vast_sim, pod)
    vast_sim.exit_instance(first["id"], code=1)
    backing_off = await wait_pod(cluster, "svc", lambda p: waiting_reason(p) == "CrashLoopBackOff")
    assert phase(backing_off) == "Running"  # as with a kubelet: the phase never goes back
    last = backing_off["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 1

    def running_again(p: Obj) -> bool:
        [container] = p["status"]["containerStatuses"]
        return "running" in container["state"] and container["restartCount"] == 1

    pod = await wait_pod(cluster, "svc", running_again)
    entries = bought_for(vast_sim, pod)
    assert len(entries) == 2
    assert entries[0]["destroyed_at"] is not None and entries[1]["destroyed_at"] is None


async def test_only_the_chosen_container_runs_and_the_other_says_why(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    containers: list[Obj] = [
        {"name": "sidecar", "image": "busybox"},
        {"name": "model", "image": "vllm/vllm-openai:latest", "args": ["--port", "8000"]},
    ]
    annotations = {"vast.ai/container": "model"}
    pod_obj = gpu_pod("multi", cluster.namespace, annotations=annotations, containers=containers)
    await cluster.create(pod_obj)
    pod = await wait_pod(cluster, "multi", lambda p: phase(p) == "Running")
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert "running" in statuses["model"]["state"]
    assert statuses["sidecar"]["state"]["waiting"]["reason"] == "NotScheduledOnInstance"
    [entry] = bought_for(vast_sim, pod)
    instance = vast_sim.instance(entry["id"])
    assert instance is not None and instance["image_uuid"] == "vllm/vllm-openai:latest"


async def test_secret_values_reach_the_instance_but_never_logs_or_events(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    secret_value = "hf_s3cr3t-T0KEN-value"
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf", "namespace": cluster.namespace},
            "data": {"token": "aGZfczNjcjN0LVQwS0VOLXZhbHVl"},
        }
    )
    sink = io.StringIO()
    handler = logger.add(sink, level="DEBUG", serialize=True)
    try:
        container = {
            "name": "app",
            "image": "nginx",
            "env": [
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
            ],
        }
        await cluster.create(gpu_pod("secretive", cluster.namespace, containers=[container]))
        pod = await wait_pod(cluster, "secretive", lambda p: phase(p) == "Running")
    finally:
        logger.remove(handler)
    [entry] = bought_for(vast_sim, pod)
    instance = vast_sim.instance(entry["id"])
    assert instance is not None and ["HF_TOKEN", secret_value] in instance["extra_env"]
    assert secret_value not in sink.getvalue()
    assert "test-key-0123456789" not in sink.getvalue()
    for event in await cluster.list("events", cluster.namespace):
        assert secret_value not in event["message"]
    shown = json.dumps(await cluster.get("pods", cluster.namespace, "secretive"))
    assert secret_value not in shown and "test-key-0123456789" not in shown  # status, notes


async def test_daemonset_pods_are_refused_and_never_bought_for(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    # The owner exists (a real garbage collector deletes pods whose owner does not), selects
    # no pod and runs nowhere, and does not control this pod: no controller acts on it.
    owner = await cluster.create(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "node-agent", "namespace": cluster.namespace},
            "spec": {
                "selector": {"matchLabels": {"app": "node-agent-nowhere"}},
                "template": {
                    "metadata": {"labels": {"app": "node-agent-nowhere"}},
                    "spec": {
                        "nodeSelector": {"vk-trio.test/nowhere": "true"},
                        "containers": [{"name": "agent", "image": "busybox"}],
                    },
                },
            },
        }
    )
    agent = gpu_pod("node-agent-x7k2p", cluster.namespace, annotations={})
    agent["metadata"]["annotations"] = {}
    agent["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "name": "node-agent",
            "uid": owner["metadata"]["uid"],
            "controller": False,
        }
    ]
    await cluster.create(agent)
    pod = await wait_pod(
        cluster, "node-agent-x7k2p", lambda p: waiting_reason(p) == "NotSupportedOnVirtualNode"
    )
    assert phase(pod) == "Pending"
    await wait_event(cluster, pod, "NotSupportedOnVirtualNode")
    assert vast_sim.ledger() == []
    await delete_and_wait_gone(cluster, "node-agent-x7k2p")  # and deleting it just works


async def test_vast_down_during_delete_keeps_the_pod_until_the_instance_is_gone(
    nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster
) -> None:
    settings = settings_for(vast_sim.url, cluster.kubeconfig, vast_attempts=1)
    await nursery.start(serve_node, settings)
    await cluster.create(gpu_pod("outage", cluster.namespace))
    pod = await wait_pod(cluster, "outage", lambda p: phase(p) == "Running")
    vast_sim.set_faults(rate_5xx=1.0)  # Vast is down: every call fails
    await cluster.delete("pods", cluster.namespace, "outage", grace=30)
    await wait_event(cluster, pod, "DestroyFailed")
    still = await cluster.get("pods", cluster.namespace, "outage")
    assert still is not None and still["metadata"]["deletionTimestamp"]  # kept, explained
    assert len(vast_sim.live_instances()) == 1

    vast_sim.set_faults(rate_5xx=0.0)  # Vast is back
    await delete_and_wait_gone(cluster, "outage", within=30)
    assert vast_sim.live_instances() == []


async def test_orphan_instance_of_this_node_is_destroyed(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    await cluster.create(gpu_pod("keeper", cluster.namespace))
    keeper = await wait_pod(cluster, "keeper", lambda p: phase(p) == "Running")
    ghost = f"vk-trio/{NODE}/{cluster.namespace}/ghost/0b5e55ed-0000-4000-8000-000000000000"
    foreign = "somebody-elses-instance"
    async with httpx.AsyncClient(base_url=str(vast_sim.url)) as http:
        for label in (ghost, foreign):
            reply = await http.put(
                f"/api/v0/asks/{vast_sim.add_offers([H100_OFFER])[0]}/",
                json={"client_id": "me", "image": "busybox", "disk": 10, "label": label},
                headers={"Authorization": "Bearer k"},
            )
            assert reply.json()["success"] is True
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda s: all(i["label"] != ghost for i in s.live_instances()))
    labels = {i["label"] for i in vast_sim.live_instances()}
    assert foreign in labels  # not ours: never touched
    assert any(label.endswith(keeper["metadata"]["uid"]) for label in labels)  # live pod kept


async def test_a_rejected_api_key_stops_the_node_at_start(
    vast_sim_factory: Any, cluster: Cluster
) -> None:
    vast: VastSim = await vast_sim_factory(api_key="the-right-key")
    await cluster.create(gpu_pod("early", cluster.namespace))
    with pytest.raises(BaseExceptionGroup) as raised, trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                serve_node, settings_for(vast.url, cluster.kubeconfig, vast_api_key="a-wrong-key")
            )
    assert raised.group_contains(VastAuthError)
    assert vast.ledger() == []


async def test_a_key_revoked_while_running_is_reported_and_nothing_is_bought(
    nursery: trio.Nursery, vast_sim_factory: Any, cluster: Cluster
) -> None:
    vast: VastSim = await vast_sim_factory(api_key="the-right-key")
    runtime: NodeRuntime = await nursery.start(
        serve_node, settings_for(vast.url, cluster.kubeconfig, vast_api_key="the-right-key")
    )
    vast.config.api_key = "a-rotated-key"
    await cluster.create(gpu_pod("denied", cluster.namespace))
    pod = await wait_pod(cluster, "denied", lambda p: waiting_reason(p) == "VastAPIError")
    assert phase(pod) == "Pending"
    await wait_event(cluster, pod, "VastAPIError")
    assert vast.ledger() == []
    async with httpx.AsyncClient(base_url=runtime.health_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503 and "Vast API" in ready.text


async def test_delete_while_booting_destroys_the_instance(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    vast_sim.set_faults(stuck_loading=1.0)
    await cluster.create(gpu_pod("booting", cluster.namespace))
    pod = await wait_pod(cluster, "booting", lambda p: waiting_reason(p) == "Provisioning")
    assert len(bought_for(vast_sim, pod)) == 1
    await delete_and_wait_gone(cluster, "booting")
    assert vast_sim.live_instances() == []


async def test_delete_while_the_create_is_in_flight_still_destroys(
    node: NodeRuntime, vast_sim: VastSim, cluster: Cluster
) -> None:
    # Every answer takes a second from the start, so the create is surely in flight when the
    # pod is deleted, however fast the API server is (no transient state to catch).
    vast_sim.set_faults(latency=1.0)
    await cluster.create(gpu_pod("inflight", cluster.namespace))
    with trio.fail_after(30):
        await vast_sim.wait_until(lambda s: s.stats().get("PUT /api/v0/asks/{id}/", 0) >= 1)
    await cluster.delete("pods", cluster.namespace, "inflight", grace=30)
    with trio.fail_after(20):
        await vast_sim.wait_until(lambda s: s.created == 1 and not s.live_instances())
    pod = await cluster.get("pods", cluster.namespace, "inflight")
    assert pod is None or pod["metadata"].get("deletionTimestamp")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_shows_the_node_and_its_pods(
    node: NodeRuntime, cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.create(gpu_pod("shown", cluster.namespace))
    await cluster.create(gpu_pod("typo", cluster.namespace, annotations={"vast.ai/disk": "lots"}))
    running = await wait_pod(cluster, "shown", lambda p: phase(p) == "Running")
    await wait_pod(cluster, "typo", lambda p: waiting_reason(p) == "InvalidAnnotation")
    await wait_event(cluster, running, "InstanceReady")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HOME": str(tmp_path)}

    async def kubectl(*args: str) -> list[list[str]]:
        result = await trio.run_process(
            [str(KUBECTL), *args], env=env, capture_stdout=True, capture_stderr=True
        )
        return rows(result.stdout.decode())

    nodes = await kubectl("get", "nodes")
    assert nodes[[r[0] for r in nodes].index(NODE)][:3] == [NODE, "Ready", "agent"]
    header, *pods = await kubectl("get", "pods", "-n", cluster.namespace, "-o", "wide")
    table = {row[0]: dict(zip(header, row, strict=False)) for row in pods}
    assert table["shown"]["STATUS"] == "Running" and table["shown"]["READY"] == "1/1"
    assert table["shown"]["IP"] == running["status"]["podIP"]
    assert table["shown"]["NODE"] == NODE
    assert table["typo"]["STATUS"] == "InvalidAnnotation"
    describe = await trio.run_process(
        [str(KUBECTL), "describe", "pod", "shown", "-n", cluster.namespace],
        env=env,
        capture_stdout=True,
    )
    text = describe.stdout.decode()
    assert "InstanceReady" in text and "OfferMatched" in text and "vast.ai/endpoints" in text


async def test_health_probes_answer_from_the_same_loop(node: NodeRuntime) -> None:
    async with httpx.AsyncClient(base_url=node.health_url) as client:
        live = await client.get("/healthz")
        assert live.status_code == 200 and live.text == "ok\n"
        ready = await client.get("/readyz")  # the node reports started once the watch synced
        assert ready.status_code == 200 and ready.text == "ok\n"
