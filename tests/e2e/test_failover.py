"""Two replicas of one node (``--leader-elect``): one drives, the other stands by and takes over.

In-process: the real ``serve_node`` twice against the stand-ins, handing over on a graceful
stop. As processes: two ``vk-trio run --leader-elect`` against ``vk-trio sim kube`` and ``vk-trio
sim vast``, the leader SIGKILLed under pod churn, with production election timings: the
standby must own the node before the node's Lease (40 s) runs out, adopt every instance (no
second buy, no leak) and keep the pods Running at their addresses.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.chaos.audit import LedgerRow, PodObject, audit
from tests.chaos.market import write_market
from tests.chaos.processes import NodeProcess, Popen, start_simulator, stop
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.errors import Fenced
from vk_trio.kube.leader import lease_name
from vk_trio.vast import Pacer, VastClient
from vk_trio.vast.models import CreateInstance

NODE = "vk-ha"
NAMESPACE = "default"
ELECTION = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease_name(NODE)}"
NODE_LEASE = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
Obj = dict[str, Any]


def gpu_pod(name: str) -> Obj:
    """A one-GPU pod bound to the node, as the scheduler leaves it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"vast.ai/gpu-type": "RTX 3090", "vast.ai/price-max": "1.00"},
        },
        "spec": {
            "nodeName": NODE,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_ready(node: Obj | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def poll(predicate: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """Wait for ``predicate`` (something read over HTTP, which cannot signal an Event)."""
    with trio.fail_after(seconds):
        while True:
            if await predicate():
                return
            await trio.sleep(0.1)


# ----- in-process --------------------------------------------------------------------------


async def test_vast_refuses_to_send_a_create_once_fenced(vast_sim: VastSim) -> None:
    def fence(what: str) -> None:
        raise Fenced(f"{what} not sent: lost the election")

    async with VastClient(
        api_key="k", base_url=str(vast_sim.url), pacer=Pacer(scale=0), fence=fence
    ) as vast:
        offer = (await vast.search_offers({"gpu_name": {"eq": "RTX 3090"}}))[0]
        request = CreateInstance(image="nginx:1.27", disk=10, label="vk-trio/x/ns/p/uid")
        with pytest.raises(Fenced):
            await vast.create_instance(offer.id, request)
        assert await vast.list_instances() == []  # lists are not fenced: standbys may read
    assert vast_sim.ledger() == []
    assert not any(key.startswith("PUT /api/v0/asks") for key in vast_sim.stats())


async def test_a_graceful_stop_hands_the_node_to_the_standby_at_once(
    vast_sim: VastSim, kube_sim: KubeSim, kubeconfig: Path, nursery: trio.Nursery
) -> None:
    base = Settings(
        node_name=NODE,
        vast_api_key="test-key",
        vast_api_url=str(vast_sim.url),
        kubeconfig=str(kubeconfig),
        health_host="127.0.0.1",
        poll_fast=0.2,
        poll_slow=1.0,
        pacing=0.0,
        leader_elect=True,
        leader_elect_namespace="kube-system",
        leader_elect_lease_duration=3,
        leader_elect_renew_deadline=2.0,
        leader_elect_retry_period=0.5,
    )
    a = msgspec.structs.replace(base, leader_elect_identity="replica-a", health_port=free_port())
    b = msgspec.structs.replace(base, leader_elect_identity="replica-b", health_port=free_port())
    a_scope = trio.CancelScope()
    not_ready: list[Obj] = []

    async def run_a(
        *, task_status: trio.TaskStatus[NodeRuntime] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with a_scope:
            await serve_node(a, task_status=task_status)

    async def watch_node() -> None:
        while True:
            node = kube_sim.get("nodes", None, NODE)
            if node is not None and not node_ready(node):
                not_ready.append(node["status"])
            await trio.sleep(0.01)

    with trio.fail_after(60):
        await nursery.start(run_a)
        nursery.start_soon(watch_node)
        nursery.start_soon(serve_node, b)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.health_port}") as probe:

            async def b_says(body: str) -> bool:
                try:
                    answer = await probe.get("/readyz")
                except httpx.TransportError:
                    return False
                return answer.status_code == 200 and answer.text == body

            # A standby is ready for its job (a PDB counts it); /healthz is plain ok.
            await poll(lambda: b_says("standby: leader is replica-a\n"), 30)
            assert (await probe.get("/healthz")).text == "ok\n"

            kube_sim.create(gpu_pod("web"))
            await kube_sim.wait_until(
                lambda s: (
                    ((s.get("pods", NAMESPACE, "web") or {}).get("status") or {}).get("phase")
                    == "Running"
                )
            )
            before = kube_sim.get("pods", NAMESPACE, "web")
            assert before is not None
            [instance] = vast_sim.ledger()

            stopped = trio.current_time()
            a_scope.cancel()  # SIGTERM: release the Lease once every task of a has ended
            await poll(lambda: b_says("ok\n"), 10)
            took = trio.current_time() - stopped
            assert took < 3.0, f"the standby took {took:.1f}s to drive the released node"

            lease = kube_sim.get("leases", "kube-system", lease_name(NODE))
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "replica-b"
            assert lease["spec"]["leaseTransitions"] == 1
            await trio.sleep(2.0)  # b sweeps Vast and follows the pod
            after = kube_sim.get("pods", NAMESPACE, "web")
            assert after is not None
            assert after["status"]["phase"] == "Running"
            assert after["status"]["podIP"] == before["status"]["podIP"]
            assert after["metadata"]["annotations"]["vast.ai/instance-id"] == str(instance["id"])
            assert [row["id"] for row in vast_sim.ledger()] == [instance["id"]]  # no second buy
            assert not_ready == []  # the node never left Ready

            kube_sim.delete("pods", NAMESPACE, "web", grace_seconds=30)  # b drives now
            await kube_sim.wait_until(lambda s: s.get("pods", NAMESPACE, "web") is None)
            assert vast_sim.ledger()[0]["destroyed_at"] is not None
    nursery.cancel_scope.cancel()


# ----- as processes, SIGKILL under churn ---------------------------------------------------

API_KEY = "failover-key-0123456789"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
NODE_FLAGS = [
    *("--poll-fast=0.2", "--poll-slow=1.0", "--reap-interval=1.0", "--pacing=0"),
    *("--backoff-first=0.5", "--backoff-cap=2.0", "--destroy-timeout=5.0"),
]
"""Fast sweeps and retries; the election and the node Lease keep their production timings."""


class _Pods(msgspec.Struct):
    items: list[PodObject]


class _Lease(msgspec.Struct):
    spec: dict[str, Any]


class Cluster:
    """What the test reads from the stand-ins over HTTP, as any client would."""

    def __init__(self, kube: httpx.AsyncClient, vast: httpx.AsyncClient) -> None:
        self.kube = kube
        self.vast = vast

    async def pods(self) -> list[PodObject]:
        return msgspec.json.decode((await self.kube.get(PODS)).content, type=_Pods).items

    async def holder(self) -> str:
        answer = await self.kube.get(ELECTION)
        if answer.status_code == 404:
            return ""
        return str(msgspec.json.decode(answer.content, type=_Lease).spec.get("holderIdentity"))

    async def ledger(self) -> list[LedgerRow]:
        return msgspec.json.decode(
            (await self.vast.get("/_sim/ledger")).content, type=list[LedgerRow]
        )

    async def create(self, name: str) -> None:
        (await self.kube.post(PODS, json=gpu_pod(name))).raise_for_status()

    async def delete(self, name: str) -> None:
        await self.kube.delete(f"{PODS}/{name}", params={"gracePeriodSeconds": "30"})


async def readyz(node: NodeProcess) -> str | None:
    """The body of a 200 from ``/readyz`` (``ok`` or ``standby: ...``); None otherwise."""
    node.check()
    async with httpx.AsyncClient(base_url=node.health_url, timeout=2.0) as probe:
        try:
            answer = await probe.get("/readyz")
        except httpx.TransportError:
            return None
    return answer.text.strip() if answer.status_code == 200 else None


async def until(what: str, predicate: Callable[[], Awaitable[bool]], *, seconds: float) -> None:
    try:
        await poll(predicate, seconds)
    except trio.TooSlowError:
        raise AssertionError(f"not within {seconds}s: {what}") from None


class Monitor:
    """Every 0.2 s: is the Node Ready, and when did its Lease last change (our clock)."""

    def __init__(self, kube: httpx.AsyncClient) -> None:
        self._kube = kube
        self.not_ready: list[str] = []
        self.longest_silence = 0.0
        """Longest time the node Lease went without a renewal, in seconds."""

    async def run(self) -> None:
        last_renew, renewed_at = None, trio.current_time()
        while True:
            lease = msgspec.json.decode((await self._kube.get(NODE_LEASE)).content, type=_Lease)
            now = trio.current_time()
            if lease.spec.get("renewTime") != last_renew:
                last_renew, renewed_at = lease.spec.get("renewTime"), now
            self.longest_silence = max(self.longest_silence, now - renewed_at)
            node = msgspec.json.decode((await self._kube.get(f"/api/v1/nodes/{NODE}")).content)
            if not node_ready(node):
                self.not_ready.append(f"{now:.1f}: {node['status']['conditions']}")
            await trio.sleep(0.2)


async def test_the_standby_takes_over_a_sigkilled_leader_before_the_node_lease_expires(
    tmp_path: Path,
) -> None:
    children: list[Popen] = []
    replicas: list[NodeProcess] = []
    try:
        market = write_market(tmp_path, pods=40, seed=3)
        vast_process, vast_url = await start_simulator(
            tmp_path, "vast", "--seed", "3", "--boot-seconds", "1", "--rate-limits", "off",
            "--api-key", API_KEY, "--offers", str(market),
        )  # fmt: skip
        children.append(vast_process)
        kubeconfig = tmp_path / "kubeconfig"
        kube_process, kube_url = await start_simulator(
            tmp_path, "kube", "--kubeconfig-out", str(kubeconfig)
        )
        children.append(kube_process)
        env = {
            "NODE_NAME": NODE,
            "VAST_API_KEY": API_KEY,
            "VAST_API_URL": vast_url,
            "KUBECONFIG": str(kubeconfig),
            "LEADER_ELECT": "true",
            "POD_NAMESPACE": "kube-system",
        }
        for identity in ("a", "b"):
            replicas.append(
                NodeProcess(
                    tmp_path,
                    env={**env, "POD_NAME": f"replica-{identity}"},
                    flags=NODE_FLAGS,
                    name=f"node-{identity}",
                )
            )
        async with (
            httpx.AsyncClient(base_url=kube_url) as kube,
            httpx.AsyncClient(base_url=vast_url) as vast,
        ):
            await _kill_the_leader_under_churn(Cluster(kube, vast), *replicas)
    finally:
        for replica in replicas:
            replica.stop()
        for child in children:
            stop(child)


async def _kill_the_leader_under_churn(cluster: Cluster, a: NodeProcess, b: NodeProcess) -> None:
    a.start()
    await until("a leads", lambda: _says(a, "ok"), seconds=60)
    b.start()
    await until("b stands by", lambda: _says(b, "standby: leader is replica-a"), seconds=60)

    steady = [f"steady-{i}" for i in range(6)]
    names = [f"pod-{i}" for i in range(6)]
    """Churned: one replaced every half second."""
    for name in steady + names:
        await cluster.create(name)

    async def all_running() -> bool:
        pods = await cluster.pods()
        return len(pods) == 12 and all(p.status.phase == "Running" for p in pods)

    await until("pods Running", all_running, seconds=60)

    monitor = Monitor(cluster.kube)
    rng = random.Random(5)
    created = len(names)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)

        async def churn() -> None:
            nonlocal created
            while True:
                await trio.sleep(0.5)
                old = names.pop(rng.randrange(len(names)))
                await cluster.delete(old)
                names.append(f"pod-{created}")
                created += 1
                await cluster.create(names[-1])

        nursery.start_soon(churn)
        await trio.sleep(3)
        before = {p.metadata.uid: _ip(p) for p in await cluster.pods() if p.metadata.name in steady}
        killed = trio.current_time()
        await a.kill()
        await until("b leads", lambda: _says(b, "ok"), seconds=40)
        took = trio.current_time() - killed
        assert await cluster.holder() == "replica-b"
        await trio.sleep(3)
        nursery.cancel_scope.cancel()  # churn stops; the monitor with it

    # Production timings: lease 15 s, seen within 2 s, polled every 2 s, then the node's
    # start (measured here: 17.6-18.4 s; the bound leaves room for a loaded machine). What
    # matters is the node Lease, renewed every 10 s: it must never go 40 s without renewal.
    assert 15 - 2 <= took < 15 + 2 * 2 + 8, f"takeover took {took:.1f}s"
    assert monitor.longest_silence < 40 - 5, monitor.longest_silence
    assert monitor.not_ready == []

    async def settled() -> bool:
        findings = audit(await cluster.ledger(), await cluster.pods(), {}, node=NODE)
        return findings.settled

    await until("settled", settled, seconds=60)
    print(f"takeover {took:.1f}s, node Lease silent at most {monitor.longest_silence:.1f}s")
    pods = await cluster.pods()
    findings = audit(await cluster.ledger(), pods, {}, node=NODE)
    assert findings.invariants() == dict.fromkeys(findings.invariants(), 0)
    # Pods that ran before the kill still run, at the same address, on the same instance.
    assert None not in before.values()
    assert {p.metadata.uid: _ip(p) for p in pods if p.metadata.uid in before} == before


async def _says(node: NodeProcess, body: str) -> bool:
    return await readyz(node) == body


def _ip(pod: PodObject) -> str | None:
    return pod.status.pod_ip if pod.status.phase == "Running" else None
