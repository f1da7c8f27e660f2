"""Namespace budgets (``vk_trio.provider.namespace_budget``): parsing the caps, holding and
releasing on the Namespace through the stand-in with several nodes deciding at once, and
tidying a node's stale holds with the reaper's rules. The three-node run against the
simulators is ``tests/e2e/test_namespace_budget.py``."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from vk_trio.annotations import NAMESPACE_HOLDS, NAMESPACE_MAX_HOURLY, NAMESPACE_MAX_INSTANCES
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.models import Pod
from vk_trio.provider.namespace_budget import (
    NAMESPACE_BUDGET_REACHED,
    Caps,
    NamespaceBudget,
    NamespaceBudgetError,
    parse_caps,
    run_tidy,
)
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import VastClient
from vk_trio.vast.pacer import Pacer

NS = "team"


def pod(name: str, uid: str | None = None, namespace: str = NS) -> Pod:
    meta = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"}
    return msgspec.convert({"metadata": meta}, Pod)


def holdings(kube_sim: KubeSim) -> dict[str, dict[str, dict[str, Any]]]:
    namespace = kube_sim.get("namespaces", None, NS)
    assert namespace is not None
    text = (namespace["metadata"].get("annotations") or {}).get(NAMESPACE_HOLDS)
    return msgspec.json.decode(text) if text else {}


def make_namespace(kube_sim: KubeSim, annotations: dict[str, str]) -> None:
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NS, "annotations": annotations},
        }
    )


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "caps"),
    [
        ({}, Caps()),
        ({NAMESPACE_MAX_HOURLY: "1.50"}, Caps(max_hourly=1.5)),
        ({NAMESPACE_MAX_HOURLY: "$2"}, Caps(max_hourly=2.0)),
        ({NAMESPACE_MAX_INSTANCES: "3"}, Caps(max_instances=3)),
        ({NAMESPACE_MAX_HOURLY: "0", NAMESPACE_MAX_INSTANCES: "0"}, Caps(0.0, 0)),
    ],
    ids=["none", "hourly", "dollar-sign", "instances", "zero"],
)
def test_caps_parse(annotations: dict[str, str], caps: Caps) -> None:
    assert parse_caps(NS, annotations) == caps


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (NAMESPACE_MAX_HOURLY, "lots"),
        (NAMESPACE_MAX_HOURLY, "-1"),
        (NAMESPACE_MAX_HOURLY, "nan"),
        (NAMESPACE_MAX_INSTANCES, "2.5"),
        (NAMESPACE_MAX_INSTANCES, "-3"),
        (NAMESPACE_MAX_INSTANCES, "²"),
    ],
    ids=["word", "negative", "nan", "fraction", "negative-count", "superscript"],
)
def test_malformed_caps_name_the_namespace_the_annotation_and_the_value(
    key: str, value: str
) -> None:
    with pytest.raises(NamespaceBudgetError) as caught:
        parse_caps(NS, {key: value})
    message = str(caught.value)
    assert NS in message and key in message and f'"{value}"' in message
    assert "\n" not in message


# -- holding against the Namespace ----------------------------------------------------------


async def test_no_cap_holds_nothing_and_writes_nothing(kube: KubeClient, kube_sim: KubeSim) -> None:
    make_namespace(kube_sim, {})
    budget = NamespaceBudget(kube, node="a")
    assert await budget.hold(pod("p"), 5.0) is None
    assert holdings(kube_sim) == {} and not budget.holding(pod("p"))
    assert not any(key.startswith("PATCH") for key in kube_sim.requests)


async def test_a_namespace_without_a_budget_is_read_once_per_quiet_period(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    """Most namespaces have no cap: their pods' buys and deletions do not each read the
    Namespace; a cap added later counts once the quiet period is over."""
    make_namespace(kube_sim, {})
    budget = NamespaceBudget(kube, node="a", quiet_for=0.5)
    for name in ("p", "q", "r"):
        assert await budget.hold(pod(name), 5.0) is None
        await budget.release(pod(name))
    assert kube_sim.requests["GET /api/v1/namespaces/{name}"] == 1
    kube_sim.patch(
        "namespaces", None, NS, {"metadata": {"annotations": {NAMESPACE_MAX_HOURLY: "1"}}}
    )
    assert await budget.hold(pod("s"), 5.0) is None  # still quiet: not yet counted
    await trio.sleep(0.6)
    refused = await budget.hold(pod("t"), 5.0)
    assert refused is not None and refused[0] == NAMESPACE_BUDGET_REACHED


async def test_three_nodes_holding_at_once_never_overshoot_and_release_frees_room(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    """Twenty pods on three nodes ask at the same moment; each node has its own process
    state (its own lock), so only the resourceVersion precondition stands between them."""
    make_namespace(kube_sim, {NAMESPACE_MAX_HOURLY: "1.00"})
    budgets = [NamespaceBudget(kube, node=node) for node in "abc"]
    outcomes: dict[str, tuple[str, str] | None] = {}

    async def ask(index: int) -> None:
        outcomes[f"p{index}"] = await budgets[index % 3].hold(pod(f"p{index}"), 0.30)

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(ask, index)
    held = sorted(name for name, outcome in outcomes.items() if outcome is None)
    assert len(held) == 3
    refused = [outcome for outcome in outcomes.values() if outcome is not None]
    assert {reason for reason, _ in refused} == {NAMESPACE_BUDGET_REACHED}
    assert "namespace team budget reached" in refused[0][1]
    assert "$1.000/h" in refused[0][1] and NAMESPACE_MAX_HOURLY in refused[0][1]
    recorded = holdings(kube_sim)
    assert sorted(p["pod"] for holds in recorded.values() for p in holds.values()) == held
    assert kube_sim.requests["PATCH /api/v1/namespaces/{name}"] >= 3

    first = held[0]
    await budgets[int(first.removeprefix("p")) % 3].release(pod(first))
    assert len([h for holds in holdings(kube_sim).values() for h in holds]) == 2
    assert await budgets[0].hold(pod("late"), 0.30) is None  # the room that freed
    assert await budgets[1].hold(pod("later"), 0.30) is not None  # and no more


async def test_the_instance_cap_counts_every_nodes_holds(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    make_namespace(kube_sim, {NAMESPACE_MAX_INSTANCES: "2"})
    a, b = NamespaceBudget(kube, node="a"), NamespaceBudget(kube, node="b")
    assert await a.hold(pod("one"), 0.1) is None
    assert await b.hold(pod("two"), 0.1) is None
    refused = await a.hold(pod("three"), 0.1)
    assert refused is not None and refused[0] == NAMESPACE_BUDGET_REACHED
    assert "2 of its 2" in refused[1]
    assert await a.hold(pod("one"), 0.2) is None  # a pod re-holding keeps its own room
    assert a.holding(pod("one")) and not b.holding(pod("one"))
    await a.release(pod("one"))
    assert not a.holding(pod("one")) and await a.hold(pod("three"), 0.1) is None


async def test_a_malformed_budget_stops_buying_with_a_one_line_reason(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    make_namespace(kube_sim, {NAMESPACE_MAX_HOURLY: "1", NAMESPACE_HOLDS: "{not json"})
    budget = NamespaceBudget(kube, node="a")
    refused = await budget.hold(pod("p"), 0.1)
    assert refused is not None and refused[0] == "InvalidAnnotation"
    assert NAMESPACE_HOLDS in refused[1] and "\n" not in refused[1]
    await budget.release(pod("p"))  # logged, not raised: a teardown must not hang on it


# -- tidying stale holds --------------------------------------------------------------------


async def test_tidy_removes_only_this_nodes_holds_whose_pod_the_api_says_is_gone(
    nursery: trio.Nursery, kube: KubeClient, kube_sim: KubeSim, vast_sim: VastSim
) -> None:
    make_namespace(kube_sim, {NAMESPACE_MAX_HOURLY: "5"})
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "alive", "namespace": NS},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
    )
    alive = kube_sim.get("pods", NS, "alive")
    assert alive is not None
    mine, theirs = NamespaceBudget(kube, node="a"), NamespaceBudget(kube, node="b")
    assert await mine.hold(pod("gone"), 0.5) is None  # deleted while node a was down
    assert await mine.hold(pod("alive", alive["metadata"]["uid"]), 0.5) is None
    assert await theirs.hold(pod("elsewhere"), 0.5) is None  # node b's: never a's to drop
    asked: list[str] = []

    async def pod_exists(namespace: str, name: str, uid: str) -> bool:
        asked.append(name)
        found = kube_sim.get("pods", namespace, name)
        return found is not None and found["metadata"]["uid"] == uid

    async with VastClient(api_key="k", base_url=str(vast_sim.url), pacer=Pacer(scale=0)) as vast:
        poller = InstancePoller(vast, node="a", fast=0.05, slow=0.05)
        await nursery.start(poller.run)
        restarted = NamespaceBudget(kube, node="a")  # a new process: knows no namespace yet
        restarted.namespaces.add(NS)  # as its pods' holds or instances would tell it
        tidy = functools.partial(
            run_tidy,
            restarted,
            poller,
            live_uids=set,
            synced=lambda: True,
            pod_exists=pod_exists,
            interval=0.05,
        )
        with trio.CancelScope() as scope:
            nursery.start_soon(tidy)
            with trio.fail_after(10):
                await kube_sim.wait_until(lambda _: "uid-gone" not in holdings(kube_sim)["a"])
            scope.cancel()
    assert set(holdings(kube_sim)["a"]) == {alive["metadata"]["uid"]}  # the API said: exists
    assert set(holdings(kube_sim)["b"]) == {"uid-elsewhere"}
    assert "elsewhere" not in asked
