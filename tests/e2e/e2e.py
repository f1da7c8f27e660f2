"""Helpers of the end-to-end pod tests: the node's test settings, a GPU pod, and waits and
reads on what a user sees (phase, waiting reason, Events) and on what was paid for (the Vast
simulator's ledger)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from tests.e2e.cluster import Cluster
from vk_trio.config import Settings
from vk_trio.devtools.sim.vast import VastSim

NODE = "vk-e2e"
Obj = dict[str, Any]

H100_OFFER: Obj = {
    "gpu_name": "H100 SXM",
    "num_gpus": 1,
    "dph_total": 1.9,
    "geolocation": "Texas, US",
    "reliability": 0.999,
    "reliability2": 0.999,
    "verification": "verified",
    "rentable": True,
    "rented": False,
    "disk_space": 500.0,
}
"""A partial offer; the simulator fills in the rest from a real one."""


def gpu_pod(
    name: str,
    namespace: str,
    *,
    annotations: dict[str, str] | None = None,
    restart_policy: str = "Always",
    containers: list[Obj] | None = None,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                "vast.ai/gpu-type": "RTX 3090",
                "vast.ai/gpu-fallbacks": "RTX 4090,RTX 3060",
                "vast.ai/price-max": "2.00",
                **(annotations or {}),
            },
        },
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": containers
            or [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def settings_for(vast_url: str | None, kubeconfig: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "node_name": NODE,
        "vast_api_key": "test-key-0123456789",
        "vast_api_url": vast_url,
        "kubeconfig": str(kubeconfig),
        "health_host": "127.0.0.1",
        "health_port": 0,
        "poll_fast": 0.1,
        "poll_slow": 0.5,
        "pacing": 0.0,
        "destroy_timeout": 10.0,
        "backoff_first": 0.2,
        "backoff_cap": 1.0,
        "reap_interval": 0.2,  # the reaper runs all through every test, next to live pods
        **overrides,
    }
    return Settings(**fields)


async def wait_pod(
    cluster: Cluster, name: str, check: Callable[[Obj], bool], *, within: float = 15.0
) -> Obj:
    async def probe() -> Obj | None:
        pod = await cluster.get("pods", cluster.namespace, name)
        return pod if pod is not None and check(pod) else None

    with trio.fail_after(within):
        return await cluster.wait_for(probe)


def phase(pod: Obj) -> str:
    return str(pod.get("status", {}).get("phase"))


def waiting_reason(pod: Obj, container: int = 0) -> str | None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    if len(statuses) <= container:
        return None
    reason = statuses[container].get("state", {}).get("waiting", {}).get("reason")
    return str(reason) if reason is not None else None


async def event_reasons(cluster: Cluster, pod: Obj) -> list[str]:
    uid = pod["metadata"]["uid"]
    events = await cluster.list("events", cluster.namespace)
    return [e["reason"] for e in events if e["involvedObject"].get("uid") == uid]


async def wait_event(cluster: Cluster, pod: Obj, reason: str) -> None:
    async def probe() -> bool | None:
        return True if reason in await event_reasons(cluster, pod) else None

    with trio.fail_after(10):
        await cluster.wait_for(probe)


def bought_for(vast: VastSim, pod: Obj) -> list[Obj]:
    uid = pod["metadata"]["uid"]
    return [e for e in vast.ledger() if (e["label"] or "").endswith("/" + uid)]


async def delete_and_wait_gone(cluster: Cluster, name: str, *, within: float = 15.0) -> None:
    await cluster.delete("pods", cluster.namespace, name, grace=30)

    async def gone() -> bool | None:
        return True if await cluster.get("pods", cluster.namespace, name) is None else None

    with trio.fail_after(within):
        await cluster.wait_for(gone)
