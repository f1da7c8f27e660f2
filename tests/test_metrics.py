"""``/metrics``: the Prometheus text format, parsed with prometheus_client's own parser, with
the Vast and Kubernetes calls counted where they happen and the state read from callbacks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import Faults
from vk_trio.health import Health
from vk_trio.http_server import Request
from vk_trio.kube.api import KubeClient
from vk_trio.metrics import StateSource, register_state
from vk_trio.retry import Backoff
from vk_trio.vast import Pacer, RateLimited, RetryPolicy, VastClient


@pytest.fixture(autouse=True)
def _no_state() -> Iterator[None]:
    yield
    register_state(None)


async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    health = Health(vast_last_success=lambda: None, vast_problem=lambda: None, vast_stale=1.0)
    response = await health.handle(Request("GET", "/metrics", {}, {}))
    assert response.status == 200
    content_type = dict(response.headers)["Content-Type"]
    assert content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_vast_calls_errors_and_429s_are_counted_by_endpoint(
    vast_sim_factory: VastSimFactory,
) -> None:
    before = await scrape()
    sim = await vast_sim_factory(faults=Faults(rate_429=1.0))
    retry = RetryPolicy(attempts=2, backoff=Backoff(0.0, 30.0))
    async with VastClient(
        api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0), retry=retry
    ) as c:
        with pytest.raises(RateLimited):
            await c.list_instances()
    after = await scrape()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("vk_trio_vast_api_requests_total", endpoint="list", code="429") == 2
    assert grew("vk_trio_vast_api_errors_total", endpoint="list") == 2
    assert grew("vk_trio_vast_api_rate_limited_total", endpoint="list") == 2
    assert grew("vk_trio_vast_api_request_duration_seconds_count", endpoint="list") == 2


async def test_kubernetes_calls_are_counted_by_verb_and_code(kube_sim: KubeSim) -> None:
    before = await scrape()
    async with KubeClient(httpx.AsyncClient(base_url=kube_sim.url)) as kube:
        await kube.request("GET", "/api/v1/namespaces/default")
    after = await scrape()
    key = ("vk_trio_kube_api_requests_total", (("code", "200"), ("verb", "GET")))
    assert after[key] - before.get(key, 0.0) == 1


async def test_state_metrics_come_from_the_registered_callbacks() -> None:
    register_state(
        StateSource(
            pods=lambda: {("Pending", "NoOffers"): 2, ("Running", ""): 3},
            instances=lambda: {"running": 3, "loading": 1},
            spend_per_hour=lambda: 1.25,
            spent=lambda: 7.5,
        )
    )
    samples = await scrape()
    assert samples[("vk_trio_pods", (("phase", "Pending"), ("reason", "NoOffers")))] == 2
    assert samples[("vk_trio_pods", (("phase", "Running"), ("reason", "")))] == 3
    assert samples[("vk_trio_instances", (("status", "loading"),))] == 1
    assert samples[("vk_trio_spend_dollars_per_hour", ())] == 1.25
    assert samples[("vk_trio_spent_dollars_total", ())] == 7.5


async def test_credit_and_cost_per_pod_and_namespace() -> None:
    register_state(
        StateSource(
            pods=dict,
            instances=dict,
            spend_per_hour=lambda: 0.5,
            spent=lambda: 0.0,
            credit=lambda: (12.5, 25.0),
            costs=lambda: {("team-a", "train"): 1.5, ("team-a", "serve"): 0.25, ("b", "x"): 2.0},
        )
    )
    samples = await scrape()
    assert samples[("vk_trio_credit_dollars", ())] == 12.5
    assert samples[("vk_trio_credit_hours_left", ())] == 25.0
    assert samples[("vk_trio_pod_cost_dollars", (("namespace", "team-a"), ("pod", "train")))] == 1.5
    assert samples[("vk_trio_namespace_cost_dollars", (("namespace", "team-a"),))] == 1.75
    assert samples[("vk_trio_namespace_cost_dollars", (("namespace", "b"),))] == 2.0


async def test_no_credit_metrics_before_the_first_read() -> None:
    register_state(
        StateSource(pods=dict, instances=dict, spend_per_hour=lambda: 0.0, spent=lambda: 0.0)
    )
    samples = await scrape()
    assert ("vk_trio_credit_dollars", ()) not in samples
