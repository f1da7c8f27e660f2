"""Prometheus metrics: what the node does, in the text format, on its own registry.

Served at ``/metrics`` on the health port (``curl :10255/metrics``, a ServiceMonitor) and on
the kubelet port behind its authentication. The registry is ours, not ``prometheus_client``'s
global one, so a library user's metrics never mix in and tests can read exactly these.

Naming follows the Prometheus conventions: ``vk_trio_`` prefix, counters end in ``_total``
(the client adds it), durations in ``_seconds``, money in dollars (``_dollars``).

Two kinds:

- event metrics, counted where the event happens: Vast API calls, errors, 429s and latency
  by endpoint (``vast/client.py``), Kubernetes API calls and pod-watch restarts
  (``kube/api.py``, ``kube/watch.py``); bound→Running and offers searched/rejected are
  observed by the lifecycle (``observe_bound_to_running``, ``OFFERS_*``);
- state metrics, read when scraped from callbacks the lifecycle registers once at start-up
  (``register_state``): pods by phase and waiting reason, instances by Vast status, spend
  now and spent so far. The callbacks must be cheap and non-blocking; they run on the Trio
  thread during a scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = [
    "BOUND_TO_RUNNING",
    "KUBE_REQUESTS",
    "OFFERS_REJECTED",
    "OFFERS_SEARCHED",
    "REGISTRY",
    "VAST_ERRORS",
    "VAST_RATE_LIMITED",
    "VAST_REQUESTS",
    "VAST_REQUEST_SECONDS",
    "WATCH_RESTARTS",
    "StateSource",
    "register_state",
    "render",
]

REGISTRY = CollectorRegistry()

VAST_REQUESTS = Counter(
    "vk_trio_vast_api_requests",
    "Vast.ai API requests sent (retries included), by endpoint and HTTP status code "
    "('error' when no answer came).",
    ["endpoint", "code"],
    registry=REGISTRY,
)
VAST_ERRORS = Counter(
    "vk_trio_vast_api_errors",
    "Vast.ai API requests that failed (non-2xx or no answer), by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
VAST_RATE_LIMITED = Counter(
    "vk_trio_vast_api_rate_limited",
    "Vast.ai API requests answered 429, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
VAST_REQUEST_SECONDS = Histogram(
    "vk_trio_vast_api_request_duration_seconds",
    "Time from sending a Vast.ai API request to its answer, by endpoint.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
KUBE_REQUESTS = Counter(
    "vk_trio_kube_api_requests",
    "Kubernetes API requests (watches excluded), by verb and HTTP status code.",
    ["verb", "code"],
    registry=REGISTRY,
)
WATCH_RESTARTS = Counter(
    "vk_trio_kube_watch_restarts",
    "Times the pod watch was re-opened or relisted, by reason.",
    ["reason"],
    registry=REGISTRY,
)
BOUND_TO_RUNNING = Histogram(
    "vk_trio_pod_bound_to_running_seconds",
    "Time from a pod being bound to this node to its Running status (offer search, rent, "
    "image pull, boot).",
    buckets=(30, 60, 120, 180, 300, 600, 900, 1800, 3600),
    registry=REGISTRY,
)
OFFERS_SEARCHED = Counter(
    "vk_trio_offers_searched",
    "Offers returned by Vast.ai searches and checked against pods' requirements.",
    registry=REGISTRY,
)
OFFERS_REJECTED = Counter(
    "vk_trio_offers_rejected",
    "Offers a pod's requirements ruled out after the search, by the constraint that did.",
    ["constraint"],
    registry=REGISTRY,
)


def observe_vast(endpoint: str, code: int | None, seconds: float | None) -> None:
    """One Vast.ai request: ``code`` None when no answer came (timeout, connection)."""
    VAST_REQUESTS.labels(endpoint, "error" if code is None else str(code)).inc()
    if code is None or code >= 400:
        VAST_ERRORS.labels(endpoint).inc()
    if code == 429:
        VAST_RATE_LIMITED.labels(endpoint).inc()
    if seconds is not None:
        VAST_REQUEST_SECONDS.labels(endpoint).observe(seconds)


@dataclass(frozen=True, kw_only=True)
class StateSource:
    """Callbacks the lifecycle registers; each is read at scrape time."""

    pods: Callable[[], Mapping[tuple[str, str], int]]
    """(phase, waiting reason or "") → pods on this node."""
    instances: Callable[[], Mapping[str, int]]
    """Vast ``actual_status`` ("running", "loading", ...) → this node's instances."""
    spend_per_hour: Callable[[], float]
    """Dollars per hour this node's instances cost now."""
    spent: Callable[[], float]
    """Dollars this node's instances have cost since the process started."""
    credit: Callable[[], tuple[float, float] | None] = lambda: None
    """(dollars of credit left on the account, hours it lasts at the current spend), or None
    before the first read."""
    costs: Callable[[], Mapping[tuple[str, str], float]] = dict
    """(namespace, pod) → dollars its instances have cost (``vast.ai/cost``)."""


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.source: StateSource | None = None

    def collect(self) -> Iterator[Metric]:
        source = self.source
        if source is None:
            return
        pods = GaugeMetricFamily(
            "vk_trio_pods",
            "Pods on this node by phase and waiting reason.",
            labels=["phase", "reason"],
        )
        for (phase, reason), count in sorted(source.pods().items()):
            pods.add_metric([phase, reason], count)
        yield pods
        instances = GaugeMetricFamily(
            "vk_trio_instances", "This node's Vast.ai instances by status.", labels=["status"]
        )
        for status, count in sorted(source.instances().items()):
            instances.add_metric([status], count)
        yield instances
        yield GaugeMetricFamily(
            "vk_trio_spend_dollars_per_hour",
            "What this node's instances cost now, in dollars per hour.",
            value=source.spend_per_hour(),
        )
        yield CounterMetricFamily(
            "vk_trio_spent_dollars",
            "What this node's instances have cost since the process started, in dollars.",
            value=source.spent(),
        )
        yield from _money(source)


def _money(source: StateSource) -> Iterator[Metric]:
    """The account's credit and what each pod and namespace has cost."""
    credit = source.credit()
    if credit is not None:
        yield GaugeMetricFamily(
            "vk_trio_credit_dollars", "The Vast account's credit, in dollars.", value=credit[0]
        )
        yield GaugeMetricFamily(
            "vk_trio_credit_hours_left",
            "Hours the Vast account's credit lasts at this node's current spend (+Inf when "
            "nothing bills).",
            value=credit[1],
        )
    costs = source.costs()
    pods = GaugeMetricFamily(
        "vk_trio_pod_cost_dollars",
        "What each pod's instances have cost so far (vast.ai/cost), in dollars.",
        labels=["namespace", "pod"],
    )
    namespaces: dict[str, float] = {}
    for (namespace, pod), dollars in sorted(costs.items()):
        pods.add_metric([namespace, pod], dollars)
        namespaces[namespace] = namespaces.get(namespace, 0.0) + dollars
    yield pods
    by_namespace = GaugeMetricFamily(
        "vk_trio_namespace_cost_dollars",
        "What the instances of each namespace's pods on this node have cost so far, in dollars.",
        labels=["namespace"],
    )
    for namespace, dollars in sorted(namespaces.items()):
        by_namespace.add_metric([namespace], dollars)
    yield by_namespace


_STATE = _StateCollector()
REGISTRY.register(_STATE)


def register_state(source: StateSource | None) -> None:
    """Make the state metrics read ``source`` (None removes them, e.g. after a test)."""
    _STATE.source = source


def observe_bound_to_running(seconds: float) -> None:
    BOUND_TO_RUNNING.observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition body and its Content-Type (``/metrics``)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
