"""The node's ``stats/v1alpha1`` Summary (``GET /stats/summary``), built from what the
provider says each pod's running container uses (``Provider.usage``).

metrics-server (``kubectl top``) reads it, and ``/metrics/resource`` renders the same figures
(``resource_metrics``); the container named is the one the instance runs, as placed by the
provider, never simply the pod's first.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from vk_trio.kube.models import Pod
from vk_trio.node.provider import Usage

__all__ = ["ContainerUsage", "stats_summary"]

ContainerUsage = tuple[Pod, str, Usage]
"""A pod, the container its instance runs, and what that container uses."""


def _time(when: _dt.datetime) -> str:
    return when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats_summary(
    node_name: str, node_start: _dt.datetime, pods: list[ContainerUsage], *, now: _dt.datetime
) -> dict[str, Any]:
    """A ``k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary`` for ``pods``.

    metrics-server (``kubectl top``) reads ``cpu.usageNanoCores`` and
    ``memory.workingSetBytes`` of each container; GPU figures go in ``accelerators`` as the
    kubelet's cAdvisor did (``make``, ``model``, ``memoryTotal``, ``memoryUsed``,
    ``dutyCycle``). The node's totals are the sums of its pods'.
    """
    stamp = _time(now)
    entries: list[dict[str, Any]] = []
    node_cpu = node_memory = 0
    for pod, container_name, usage in pods:
        cpu = {"time": stamp, "usageNanoCores": usage.cpu_nano_cores or 0}
        memory = {
            "time": stamp,
            "usageBytes": usage.memory_bytes or 0,
            "workingSetBytes": usage.memory_bytes or 0,
        }
        node_cpu += usage.cpu_nano_cores or 0
        node_memory += usage.memory_bytes or 0
        started = _time(usage.start_time) if usage.start_time else stamp
        container: dict[str, Any] = {
            "name": container_name,
            "startTime": started,
            "cpu": cpu,
            "memory": memory,
        }
        if usage.disk_used_bytes is not None:
            container["rootfs"] = {
                "time": stamp,
                "usedBytes": usage.disk_used_bytes,
                **(
                    {"capacityBytes": usage.disk_capacity_bytes}
                    if usage.disk_capacity_bytes is not None
                    else {}
                ),
            }
        if usage.gpu_utilisation is not None or usage.gpu_name:
            container["accelerators"] = [
                {
                    "make": "nvidia",
                    "model": usage.gpu_name or "",
                    "id": "0",
                    "memoryTotal": usage.gpu_memory_bytes or 0,
                    "memoryUsed": usage.gpu_memory_used_bytes or 0,
                    "dutyCycle": round(usage.gpu_utilisation or 0.0),
                }
            ]
        entries.append(
            {
                "podRef": {
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": pod.uid,
                },
                "startTime": started,
                "containers": [container],
                "cpu": cpu,
                "memory": memory,
            }
        )
    return {
        "node": {
            "nodeName": node_name,
            "startTime": _time(node_start),
            "cpu": {"time": stamp, "usageNanoCores": node_cpu},
            "memory": {"time": stamp, "usageBytes": node_memory, "workingSetBytes": node_memory},
        },
        "pods": entries,
    }
