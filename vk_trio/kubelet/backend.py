"""What the kubelet API needs from a provider: this node's pods, their logs, their usage.

A provider implements ``KubeletBackend``; the server never learns where the pods run. Errors
a backend raises are typed (``NotFound``, ``NotReady``) so the server can answer with the
status the real kubelet uses, and their messages reach ``kubectl`` as they are: say what the
pod waits for ("no instance yet: waiting for an offer"), not "error".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from vk_trio.kube.models import Pod

__all__ = [
    "BackendError",
    "KubeletBackend",
    "LogOptions",
    "NotFound",
    "NotReady",
    "PodUsage",
    "stats_summary",
]


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    """The query of ``GET /containerLogs/...``, parsed and validated as the kubelet does."""

    tail_lines: int | None = None
    """Only the last this many lines (before ``follow`` adds more)."""
    limit_bytes: int | None = None
    """Stop after this many bytes of output (follow included)."""
    timestamps: bool = False
    """Prefix every line with its RFC 3339 time and a space."""
    since_seconds: int | None = None
    since_time: _dt.datetime | None = None
    """Only lines newer than this (exclusive with ``since_seconds``)."""
    previous: bool = False
    """The logs of the previous instance of the container (after a restart or replacement)."""
    follow: bool = False
    """Keep the response open and send new lines until the container ends or the client
    leaves."""

    def cutoff(self, now: _dt.datetime) -> _dt.datetime | None:
        """The oldest time a line may have to be shown, or None for all of them."""
        if self.since_time is not None:
            return self.since_time
        if self.since_seconds is not None:
            return now - _dt.timedelta(seconds=self.since_seconds)
        return None


class BackendError(Exception):
    """The backend cannot answer; ``status`` is the HTTP status the kubelet answers with."""

    status = 500
    reason = "InternalError"


class NotFound(BackendError):
    """No such pod or container on this node."""

    status = 404
    reason = "NotFound"


class NotReady(BackendError):
    """The container has nothing to show yet (or any more): the message says what it waits
    for. The real kubelet answers 400 ("container ... is waiting to start: ...")."""

    status = 400
    reason = "BadRequest"


class KubeletBackend(Protocol):
    """The provider's side of the kubelet API (a ``typing.Protocol``: no base class needed)."""

    def pods(self) -> list[Pod]:
        """This node's pods, as the node last saw them (``GET /pods``)."""
        ...

    async def container_logs(
        self, namespace: str, name: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        """The container's log output under ``options``, as chunks of whole lines.

        Awaiting it does the first fetch, so that ``NotFound``/``NotReady`` are raised before
        the response starts; the iterator then ends when the output is complete (or, with
        ``follow``, when the container ends). ``vk_trio.kubelet.logs`` does the slicing and
        following for a provider that can only fetch full snapshots.
        """
        ...

    async def stats_summary(self) -> dict[str, Any]:
        """The node's ``stats/v1alpha1`` Summary (``stats_summary()`` builds the shape)."""
        ...


@dataclass(frozen=True, kw_only=True)
class PodUsage:
    """What a provider knows about one pod's usage; None where it does not know."""

    namespace: str
    name: str
    uid: str
    container: str
    start_time: _dt.datetime | None = None
    cpu_nano_cores: int | None = None
    memory_bytes: int | None = None
    disk_used_bytes: int | None = None
    disk_capacity_bytes: int | None = None
    gpu_utilisation: float | None = None
    """0..100 percent, as ``nvidia-smi`` shows it."""
    gpu_memory_bytes: int | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_name: str | None = None


def _time(when: _dt.datetime) -> str:
    return when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats_summary(
    node_name: str, node_start: _dt.datetime, pods: list[PodUsage], *, now: _dt.datetime
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
    for usage in pods:
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
            "name": usage.container,
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
                "podRef": {"name": usage.name, "namespace": usage.namespace, "uid": usage.uid},
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
