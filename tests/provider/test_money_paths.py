"""The provider's two money paths against the Vast simulator, one review defect each.

- A burst of deletions at Vast's real rate limits: the destroy deadline covers the call, not
  the time queued for a pacer slot, so 40 pods deleted at once all get destroyed, none fails
  (before: 21 ``TooSlowError``s with empty messages).
- No buy intent on record, no create sent: a pod whose ``vast.ai/buying`` cannot be written
  waits (and says why) instead of buying.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from tests.plugins.vast_sim import VastSimFactory
from tests.provider.fakes import FakeNamespaceBudgets, FakeObjects, FakeProgress
from vk_trio.annotations import BUYING
from vk_trio.config import Settings
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.kube.errors import KubeUnavailable
from vk_trio.kube.models import Pod
from vk_trio.provider.budget import Budget
from vk_trio.provider.buying import Buyer
from vk_trio.provider.instances import destroy_all
from vk_trio.provider.labels import instance_label
from vk_trio.provider.market import OfferClaims, SharedSearches
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.requirements import Requirements
from vk_trio.vast import CreateInstance, Offer, Pacer, VastClient

NODE = "vk-money"
BURST = 40


@pytest.fixture
def jumpy_clock() -> MockClock:
    """Virtual time that jumps after 10 ms of real idleness (sockets are real here)."""
    return MockClock(autojump_threshold=0.01)


async def test_a_burst_of_deletions_at_real_limits_destroys_everything(
    jumpy_clock: MockClock, vast_sim_factory: VastSimFactory
) -> None:
    """40 creates and 40 destroys at Vast's pace: about six virtual minutes."""
    sim = await vast_sim_factory(rate_limits="real", boot_seconds=0.0)
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer()) as vast:
        offers = await vast.search_offers({"rentable": {"eq": True}, "limit": BURST})
        for n, offer in enumerate(offers[:BURST]):
            label = instance_label(NODE, "default", f"p{n}", f"uid-{n}")
            await vast.create_instance(offer.id, CreateInstance(image="x", disk=10, label=label))
        poller = InstancePoller(vast, node=NODE)
        failures: list[BaseException] = []

        async def delete(uid: str) -> None:
            try:
                await destroy_all(vast, poller, uid, http_timeout=60.0)
            except BaseException as exc:
                failures.append(exc)
                raise

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            async with trio.open_nursery() as deletions:
                for n in range(BURST):
                    deletions.start_soon(delete, f"uid-{n}")
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - started
    assert failures == []
    assert sim.destroyed == BURST and not sim.live_instances()
    assert not [key for key in sim.stats() if key.endswith(" 429")]
    assert elapsed >= (BURST - 1) * 3.0 * 1.1  # really paced: far beyond one 60 s deadline


class RefusingProgress(FakeProgress):
    """A pod whose annotations cannot be written (the API server refuses the patch)."""

    async def annotate(self, annotations: Mapping[str, str | None]) -> None:
        await trio.lowlevel.checkpoint()
        if annotations.get(BUYING):
            raise KubeUnavailable("PATCH pods/p: connection refused")


POD = msgspec.convert(
    {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-p"},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}]},
    },
    Pod,
)


async def try_to_buy(
    sim: VastSim, progress: FakeProgress, *, max_instances: int | None, seconds: float
) -> None:
    """Let ``POD`` try to buy for ``seconds`` (virtual) with the Buyer of a real node."""
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as vast:
        poller = InstancePoller(vast, node=NODE)
        buyer = Buyer(
            settings=Settings(node_name=NODE),
            vast=vast,
            poller=poller,
            searches=SharedSearches(vast),
            claims=OfferClaims(),
            budget=Budget(poller, max_hourly=None, max_instances=max_instances),
            namespaces=FakeNamespaceBudgets(),
            objects=FakeObjects(),
        )
        with trio.move_on_after(seconds):
            await buyer.acquire(
                POD,
                Requirements(verified=False, min_reliability=0.0),
                label=instance_label(NODE, "default", "p", "uid-p"),
                excluded_machines=set(),
                progress=progress,
            )


async def test_no_intent_on_record_no_create_sent(
    autojump_clock: Any, vast_sim_factory: VastSimFactory
) -> None:
    sim = await vast_sim_factory()
    progress = RefusingProgress(POD)
    await try_to_buy(sim, progress, max_instances=None, seconds=120)
    assert sim.created == 0
    reasons = {reason for reason, _ in progress.waits}
    assert "KubeAPIError" in reasons
    assert any("before buying" in message for _, message in progress.waits)


async def test_a_spend_capped_pod_says_so_without_flickering(
    autojump_clock: Any, vast_sim_factory: VastSimFactory
) -> None:
    """Issue 13: the waiting reason alternated between SearchingOffers and SpendCapReached at
    every retry (and logged both). It says SearchingOffers once, then only why it waits."""
    sim = await vast_sim_factory()
    progress = FakeProgress(POD)
    await try_to_buy(sim, progress, max_instances=0, seconds=600)
    reasons = [reason for reason, _ in progress.waits]
    assert reasons[0] == "SearchingOffers"
    assert len(reasons) > 5 and set(reasons[1:]) == {"SpendCapReached"}
    assert sim.created == 0


def test_a_location_without_a_city_reads_as_its_country() -> None:
    from vk_trio.provider.buying import _location

    assert _location(msgspec.convert({"id": 1, "geolocation": ", CA"}, Offer)) == "CA"
    assert _location(msgspec.convert({"id": 1, "geolocation": "Texas, US"}, Offer)) == "Texas, US"
