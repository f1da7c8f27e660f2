"""Money safety, end to end: each test pins one invariant of issue 4 to the simulator's ledger.

Every test here fails if its invariant is broken: the double-buy tests count instances per pod
UID, the budget tests count what runs at once, the boot tests count machines tried. Outcomes
are read where a user would read them (the pod, its Events) and where money is spent (the
ledger of every instance ever created).
"""

from __future__ import annotations

import httpx
import trio

from tests.e2e.cluster import Cluster
from tests.e2e.e2e import (
    H100_OFFER,
    NODE,
    Obj,
    bought_for,
    delete_and_wait_gone,
    gpu_pod,
    phase,
    settings_for,
    wait_event,
    wait_pod,
    waiting_reason,
)
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.pods import get_pod
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.reaper import run_reaper
from vk_trio.vast import VastClient

ONLY_3090 = {"vast.ai/gpu-type": "RTX 3090", "vast.ai/gpu-fallbacks": ""}


async def create_labelled_instance(vast: VastSim, label: str, offer: Obj) -> int:
    """Buy an instance by hand, as an earlier process (or another client) would have."""
    [offer_id] = vast.add_offers([offer])
    async with httpx.AsyncClient(base_url=str(vast.url)) as http:
        reply = await http.put(
            f"/api/v0/asks/{offer_id}/",
            json={"client_id": "me", "image": "nginx", "disk": 10, "label": label},
            headers={"Authorization": "Bearer k"},
        )
    created: int = reply.json()["new_contract"]
    return created


def label_of(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"vk-trio/{NODE}/{meta['namespace']}/{meta['name']}/{meta['uid']}"


def only_3090s(vast: VastSim, price: float, count: int) -> None:
    """A market of ``count`` RTX 3090 offers at ``price`` $/h and nothing else that matches."""
    vast.remove_offers(lambda row: row.get("gpu_name") == "RTX 3090")
    vast.add_offers([dict(H100_OFFER, gpu_name="RTX 3090", dph_total=price)] * count)


async def readyz_becomes(probes: httpx.AsyncClient, status: int) -> str:
    """The /readyz body once it answers ``status`` (within 20 s)."""
    for _ in range(100):
        reply = await probes.get("/readyz")
        if reply.status_code == status:
            return reply.text
        await trio.sleep(0.2)
    raise AssertionError(f"/readyz never answered {status}")


# -- invariant 1: no double buy ---------------------------------------------------------------


async def test_the_buy_intent_is_on_the_pod_before_the_create_is_sent(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    vast_sim.set_faults(latency=1.0)  # every answer takes a second: the create is in flight
    await cluster.create(gpu_pod("intent", cluster.namespace))
    pod = await wait_pod(
        cluster, "intent", lambda p: "vast.ai/buying" in p["metadata"].get("annotations", {})
    )
    assert bought_for(vast_sim, pod) == []  # recorded first, bought after
    vast_sim.set_faults(latency=0.0)
    pod = await wait_pod(cluster, "intent", lambda p: phase(p) == "Running")
    assert "vast.ai/buying" not in pod["metadata"]["annotations"]  # outcome known: cleared
    assert len(bought_for(vast_sim, pod)) == 1


async def test_a_buy_interrupted_by_a_crash_is_found_not_repeated(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """The previous process sent a create and died; Vast lists the instance only later."""
    pod = gpu_pod("crashed", cluster.namespace)
    pod["metadata"]["annotations"]["vast.ai/buying"] = "offer 1 at 2026-11-27T00:00:00Z"
    created = await cluster.create(pod)

    listed = trio.Event()

    async def list_lags_then_shows_the_instance() -> None:
        await trio.sleep(2.0)
        await create_labelled_instance(vast_sim, label_of(created), H100_OFFER)
        listed.set()

    nursery.start_soon(list_lags_then_shows_the_instance)
    await nursery.start(serve_node, settings_for(vast_sim.url, cluster.kubeconfig))
    running = await wait_pod(cluster, "crashed", lambda p: phase(p) == "Running", within=30)
    await listed.wait()
    assert len(bought_for(vast_sim, running)) == 1  # adopted, not bought again
    assert "vast.ai/buying" not in running["metadata"]["annotations"]


async def test_a_second_instance_for_one_pod_is_destroyed_on_sight(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """A lost create answer that is listed only after the pod bought again: keep one."""
    await cluster.create(gpu_pod("twice", cluster.namespace))
    pod = await wait_pod(cluster, "twice", lambda p: phase(p) == "Running")
    late = await create_labelled_instance(vast_sim, label_of(pod), H100_OFFER)
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda s: s.instance(late) is None)
    live = [i for i in vast_sim.live_instances() if i["label"] == label_of(pod)]
    assert len(live) == 1 and live[0]["id"] != late
    pod = await wait_pod(cluster, "twice", lambda p: phase(p) == "Running")


async def test_a_lost_create_is_looked_up_until_the_list_answers_not_bought_again(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """The create's answer is lost, and Vast then fails every call for a while: the pod must
    wait for a list that answers, not search and buy anew."""
    settings = settings_for(vast_sim.url, cluster.kubeconfig, vast_attempts=1)
    await nursery.start(serve_node, settings)
    vast_sim.set_faults(lose_create_response=1.0)
    await cluster.create(gpu_pod("unlucky", cluster.namespace))
    with trio.fail_after(15):
        await vast_sim.wait_until(lambda s: s.created >= 1)
    vast_sim.set_faults(lose_create_response=0.0, rate_5xx=1.0)  # the lookup's lists fail
    await trio.sleep(2.0)
    vast_sim.set_faults(rate_5xx=0.0)
    pod = await wait_pod(cluster, "unlucky", lambda p: phase(p) == "Running", within=30)
    assert len(bought_for(vast_sim, pod)) == 1


# -- invariant 2: no leak, and never on a partial view -----------------------------------------


async def test_the_reaper_spares_a_pod_its_watch_missed_and_needs_the_api_to_destroy(
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """The reaper sees an instance whose pod its (stale) view lacks: it asks the API first."""
    alive = await cluster.create(gpu_pod("unseen", cluster.namespace))
    instance = await create_labelled_instance(vast_sim, label_of(alive), H100_OFFER)
    api_up = True

    async with (
        VastClient(api_key="k", base_url=str(vast_sim.url)) as vast,
        KubeClient.from_config(await load_config(kubeconfig=str(cluster.kubeconfig))) as kube,
    ):

        async def pod_exists(namespace: str, name: str, uid: str) -> bool:
            if not api_up:
                raise httpx.ConnectError("the API server cannot be reached")
            found = await get_pod(kube, namespace, name)
            return found is not None and found.uid == uid

        poller = InstancePoller(vast, node=NODE, fast=0.05, slow=0.05)
        async with trio.open_nursery() as tasks:  # closed before the clients are
            await tasks.start(poller.run)
            await tasks.start(
                lambda task_status: run_reaper(
                    vast,
                    poller,
                    live_uids=set,  # a view that lacks every pod
                    synced=lambda: True,
                    pod_exists=pod_exists,
                    interval=0.1,
                    task_status=task_status,
                )
            )
            await trio.sleep(1.5)  # many rounds, many strikes
            assert vast_sim.instance(instance) is not None  # the API says the pod lives

            api_up = False
            await cluster.delete("pods", cluster.namespace, "unseen", grace=0)
            await trio.sleep(1.5)
            assert vast_sim.instance(instance) is not None  # no answer, no destroy

            api_up = True
            with trio.fail_after(10):
                await vast_sim.wait_until(lambda s: s.instance(instance) is None)
            tasks.cancel_scope.cancel()


# -- invariant 3: restart-safe ------------------------------------------------------------------


async def test_a_restart_while_the_host_is_offline_keeps_the_pod_running_with_its_ip(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """Found by the chaos soak: the new process showed "SearchingOffers" and no IP for a pod
    that still held its (offline) instance."""
    settings = settings_for(vast_sim.url, cluster.kubeconfig)
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            await cluster.create(gpu_pod("held", cluster.namespace))
            before = await wait_pod(cluster, "held", lambda p: phase(p) == "Running")
            first_run.cancel()
    [entry] = bought_for(vast_sim, before)
    vast_sim.set_offline(entry["id"])

    second: NodeRuntime = await nursery.start(serve_node, settings)
    await wait_pod(cluster, "held", lambda p: not p["status"]["containerStatuses"][0]["ready"])
    for _ in range(3):
        await second.poller.fresh()
    pod = await cluster.get("pods", cluster.namespace, "held")
    assert pod is not None and phase(pod) == "Running"
    [container] = pod["status"]["containerStatuses"]
    assert set(container["state"]) == {"running"}
    assert (
        container["state"]["running"]["startedAt"]
        == (before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    )
    assert pod["status"]["podIP"] == before["status"]["podIP"]
    assert len(bought_for(vast_sim, pod)) == 1


async def test_a_restart_mid_boot_keeps_provisioning_and_the_startup_clock(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """Killed while the instance boots; meanwhile one host goes offline, another stays stuck.
    The new process shows both as provisioning (found by the chaos soak: it said
    "SearchingOffers"), and times the stuck boot from the instance's creation, not from the
    restart, so restarts cannot keep a stuck instance billing forever."""
    settings = settings_for(vast_sim.url, cluster.kubeconfig)
    vast_sim.set_faults(stuck_loading=1.0)
    timeouts = {"dark": "10m", "stuck": "5s"}
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            await inner.start(serve_node, settings)
            for name, timeout in timeouts.items():
                annotations = {"vast.ai/startup-timeout": timeout}
                await cluster.create(gpu_pod(name, cluster.namespace, annotations=annotations))
                await wait_pod(cluster, name, lambda p: waiting_reason(p) == "Provisioning")
            first_run.cancel()
    vast_sim.set_faults(stuck_loading=0.0)
    dark = await cluster.get("pods", cluster.namespace, "dark")
    assert dark is not None
    [entry] = bought_for(vast_sim, dark)
    vast_sim.set_offline(entry["id"])
    await trio.sleep(5.5)  # the stuck one is now past its startup timeout

    restarted = trio.current_time()
    second: NodeRuntime = await nursery.start(serve_node, settings)
    stuck = await cluster.get("pods", cluster.namespace, "stuck")
    assert stuck is not None
    await wait_event(cluster, stuck, "BootTimeout")
    assert trio.current_time() - restarted < 3.0  # not a fresh 5 s after adoption
    await second.poller.fresh()
    dark = await wait_pod(cluster, "dark", lambda p: waiting_reason(p) == "Provisioning")
    message = dark["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "offline" in message


# -- invariant 4: bounded spend ----------------------------------------------------------------


async def test_pods_beyond_the_instance_cap_wait_and_run_when_room_frees(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    await nursery.start(serve_node, settings_for(vast_sim.url, cluster.kubeconfig, max_instances=1))
    await cluster.create(gpu_pod("first", cluster.namespace))
    await wait_pod(cluster, "first", lambda p: phase(p) == "Running")
    await cluster.create(gpu_pod("second", cluster.namespace))
    waiting = await wait_pod(cluster, "second", lambda p: waiting_reason(p) == "SpendCapReached")
    assert phase(waiting) == "Pending" and bought_for(vast_sim, waiting) == []
    await wait_event(cluster, waiting, "SpendCapReached")

    await delete_and_wait_gone(cluster, "first")
    running = await wait_pod(cluster, "second", lambda p: phase(p) == "Running", within=20)
    assert len(bought_for(vast_sim, running)) == 1
    assert len(vast_sim.live_instances()) == 1


async def test_the_hourly_budget_holds_for_pods_buying_at_once(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    only_3090s(vast_sim, price=0.40, count=10)
    await nursery.start(
        serve_node, settings_for(vast_sim.url, cluster.kubeconfig, max_hourly_spend=1.0)
    )
    for index in range(4):  # all at once: holds, not sweeps, must keep the budget
        await cluster.create(gpu_pod(f"p{index}", cluster.namespace, annotations=ONLY_3090))
    with trio.fail_after(20):
        await vast_sim.wait_until(lambda s: len(s.live_instances()) == 2)
    await trio.sleep(1.0)  # several more rounds of every waiting pod trying to buy
    live = vast_sim.live_instances()
    assert len(live) == 2 and sum(i["dph_total"] for i in live) <= 1.0
    reasons = []
    for index in range(4):
        pod = await cluster.get("pods", cluster.namespace, f"p{index}")
        assert pod is not None
        reasons.append(waiting_reason(pod))
    assert reasons.count("SpendCapReached") == 2


async def test_an_instance_billing_above_the_cap_is_destroyed_and_replaced(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    """An earlier process bought at $1.90/h; the pod's cap is $1.00/h: it must not keep it."""
    annotations = {"vast.ai/price-max": "1.00"}
    created = await cluster.create(gpu_pod("capped", cluster.namespace, annotations=annotations))
    pricey = await create_labelled_instance(vast_sim, label_of(created), H100_OFFER)
    await nursery.start(serve_node, settings_for(vast_sim.url, cluster.kubeconfig))
    pod = await wait_pod(cluster, "capped", lambda p: phase(p) == "Running", within=20)
    await wait_event(cluster, pod, "PriceCapExceeded")
    assert vast_sim.instance(pricey) is None
    [kept] = [i for i in vast_sim.live_instances() if i["label"] == label_of(pod)]
    assert kept["dph_total"] <= 1.0


# -- invariant 6: stuck boots end ---------------------------------------------------------------


async def test_a_boot_past_the_pods_startup_timeout_moves_to_another_machine(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    vast_sim.set_faults(stuck_loading=1.0)
    annotations = {"vast.ai/startup-timeout": "2s"}
    await cluster.create(gpu_pod("slow", cluster.namespace, annotations=annotations))
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda s: s.created == 1)
    vast_sim.set_faults(stuck_loading=0.0)
    pod = await wait_pod(cluster, "slow", lambda p: phase(p) == "Running", within=20)
    await wait_event(cluster, pod, "BootTimeout")
    first, second = bought_for(vast_sim, pod)
    assert first["destroyed_at"] is not None and second["destroyed_at"] is None
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0  # not the app's fault


async def test_a_container_that_fails_to_start_tries_another_machine(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    vast_sim.set_faults(oci_failure=1.0)
    await cluster.create(gpu_pod("oci", cluster.namespace))
    with trio.fail_after(10):
        await vast_sim.wait_until(lambda s: s.created == 1)
    vast_sim.set_faults(oci_failure=0.0)
    pod = await wait_pod(cluster, "oci", lambda p: phase(p) == "Running", within=20)
    await wait_event(cluster, pod, "StartFailed")
    first, second = bought_for(vast_sim, pod)
    assert first["destroyed_at"] is not None and second["destroyed_at"] is None


async def test_an_image_that_fails_everywhere_ends_the_pod_after_three_machines(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    vast_sim.set_faults(oci_failure=1.0)
    await cluster.create(gpu_pod("broken", cluster.namespace, restart_policy="Never"))
    pod = await wait_pod(cluster, "broken", lambda p: phase(p) == "Failed", within=30)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    bought = bought_for(vast_sim, pod)
    assert len(bought) == 3 and all(b["destroyed_at"] is not None for b in bought)


# -- invariant 5: outage-safe ---------------------------------------------------------------------


async def test_a_vast_outage_fails_nothing_destroys_nothing_and_shows_in_readyz(
    nursery: trio.Nursery,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    settings = settings_for(vast_sim.url, cluster.kubeconfig, vast_attempts=1)
    runtime: NodeRuntime = await nursery.start(serve_node, settings)
    await cluster.create(gpu_pod("steady", cluster.namespace, restart_policy="Never"))
    await wait_pod(cluster, "steady", lambda p: phase(p) == "Running")
    vast_sim.set_faults(rate_5xx=1.0)
    async with httpx.AsyncClient(base_url=runtime.health_url) as probes:
        assert "Vast API failing" in await readyz_becomes(probes, 503)
        await trio.sleep(2.0)  # many failed sweeps
        pod = await cluster.get("pods", cluster.namespace, "steady")
        assert pod is not None and phase(pod) == "Running"
        assert all(entry["destroyed_at"] is None for entry in vast_sim.ledger())

        vast_sim.set_faults(rate_5xx=0.0)
        await readyz_becomes(probes, 200)
    for _ in range(3):  # sweeps after the outage: a node that lost track would act now
        await runtime.poller.fresh()
    # An absence has no event to wait for: give a wrongly acting pod task a window (it would
    # destroy within milliseconds of these sweeps; breaking the poller so fails this test).
    await trio.sleep(1.0)
    pod = await cluster.get("pods", cluster.namespace, "steady")
    assert pod is not None and phase(pod) == "Running"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    [entry] = vast_sim.ledger()
    assert entry["destroyed_at"] is None


# -- invariant 7: only pods meant for Vast -------------------------------------------------------


async def test_mirror_pods_are_refused_and_never_bought_for(
    node: NodeRuntime,
    vast_sim: VastSim,
    cluster: Cluster,
) -> None:
    mirror = gpu_pod(
        "etcd-static", cluster.namespace, annotations={"kubernetes.io/config.mirror": "abc"}
    )
    await cluster.create(mirror)
    pod = await wait_pod(
        cluster, "etcd-static", lambda p: waiting_reason(p) == "NotSupportedOnVirtualNode"
    )
    await wait_event(cluster, pod, "NotSupportedOnVirtualNode")
    assert vast_sim.ledger() == []
