"""``GET /metrics/resource``: the kubelet's resource metrics, what metrics-server scrapes.

metrics-server (0.6 and later) reads only this endpoint, not ``/stats/summary``, to serve the
``metrics.k8s.io`` API behind ``kubectl top``. It wants cumulative CPU time
(``*_cpu_usage_seconds_total``, a counter it turns into a rate between two scrapes) and the
memory working set, per container, per pod and for the node, each sample stamped with when it
was measured, in the Prometheus text format.

A rented instance reports its CPU use as a rate (``usageNanoCores`` in the summary), so
``ResourceMetrics`` integrates that rate over time per container: each scrape adds the last
rate times the time since the previous scrape. The first scrape of a container reads 0.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

__all__ = ["CONTENT_TYPE", "ResourceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HELP = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    "container_start_time_seconds": (
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    ),
    "scrape_error": (
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
}


class ResourceMetrics:
    """Turns successive stats summaries into resource metrics with cumulative CPU."""

    def __init__(self) -> None:
        self._cpu: dict[tuple[str, ...], tuple[float, float, float]] = {}
        """Series key → (seconds so far, last rate in cores, when it was read)."""

    def render(self, summary: dict[str, Any], *, now: float | None = None) -> str:
        """The text exposition of ``summary`` (a stats/v1alpha1 Summary) at ``now``."""
        now = time.time() if now is None else now
        stamp = int(now * 1000)
        samples: dict[str, list[str]] = {name: [] for name in _HELP}
        seen: set[tuple[str, ...]] = set()

        def cpu(key: tuple[str, ...], stats: dict[str, Any]) -> float:
            seen.add(key)
            rate = float(stats.get("cpu", {}).get("usageNanoCores") or 0) / 1e9
            total, last_rate, since = self._cpu.get(key, (0.0, rate, now))
            total += last_rate * max(0.0, now - since)
            self._cpu[key] = (total, rate, now)
            return total

        def add(name: str, labels: dict[str, str], value: float) -> None:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            series = f"{name}{{{text}}}" if text else name
            shown = int(value) if float(value).is_integer() else repr(float(value))
            samples[name].append(f"{series} {shown} {stamp}")

        for pod in summary.get("pods", []):
            ref = pod.get("podRef", {})
            names = {"namespace": ref.get("namespace", ""), "pod": ref.get("name", "")}
            for container in pod.get("containers", []):
                labels = {"container": container.get("name", ""), **names}
                key = ("container", ref.get("uid", ""), labels["container"])
                add("container_cpu_usage_seconds_total", labels, cpu(key, container))
                memory = container.get("memory", {}).get("workingSetBytes") or 0
                add("container_memory_working_set_bytes", labels, memory)
                started = _epoch(container.get("startTime"))
                if started is not None:
                    add("container_start_time_seconds", labels, started)
            add("pod_cpu_usage_seconds_total", names, cpu(("pod", ref.get("uid", "")), pod))
            memory = pod.get("memory", {}).get("workingSetBytes") or 0
            add("pod_memory_working_set_bytes", names, memory)
        node = summary.get("node", {})
        add("node_cpu_usage_seconds_total", {}, cpu(("node",), node))
        add("node_memory_working_set_bytes", {}, node.get("memory", {}).get("workingSetBytes") or 0)
        samples["scrape_error"].append("scrape_error 0")
        for gone in set(self._cpu) - seen:  # pods that left: their counters go with them
            del self._cpu[gone]
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _epoch(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 ``...Z`` time, None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
