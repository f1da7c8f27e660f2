"""What a restarted node finds for a pod (``VastProvider.adopt``) when no instance is listed
for it: a recorded instance that vanished is lost (a restart); a buy that was in flight when
the last process died, and rented nothing, is not. Against the Vast simulator, fake time."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from tests.plugins.vast_sim import VastSimFactory
from tests.provider.fakes import FakeNamespaceBudgets, FakeObjects, FakeProgress
from vk_trio.annotations import BUYING, INSTANCE_ID
from vk_trio.config import Settings
from vk_trio.kube.models import Pod
from vk_trio.node.provider import Lost
from vk_trio.provider.budget import Budget
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.vast_provider import VastProvider
from vk_trio.vast import Pacer, VastClient

NODE = "vk-adopt"


def _pod(annotations: dict[str, str]) -> Pod:
    return msgspec.convert(
        {
            "metadata": {
                "name": "p",
                "namespace": "default",
                "uid": "uid-p",
                "annotations": annotations,
            },
            "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}]},
        },
        Pod,
    )


@pytest.mark.parametrize(
    ("annotations", "lost"),
    [
        ({INSTANCE_ID: "41"}, True),
        ({INSTANCE_ID: "41", BUYING: "offer 7 at 2026-12-07T10:00:00Z"}, False),
        ({}, False),
    ],
    ids=["recorded-instance-gone", "buy-in-flight-rented-nothing", "never-bought"],
)
async def test_what_a_restarted_node_finds_for_a_pod_without_an_instance(
    autojump_clock: Any, vast_sim_factory: VastSimFactory, annotations: dict[str, str], lost: bool
) -> None:
    sim = await vast_sim_factory()
    settings = Settings(node_name=NODE)
    async with VastClient(api_key="k", base_url=str(sim.url), pacer=Pacer(scale=0)) as vast:
        poller = InstancePoller(vast, node=NODE)
        provider = VastProvider(
            settings=settings,
            vast=vast,
            poller=poller,
            objects=FakeObjects(),
            budget=Budget(poller, max_hourly=None, max_instances=None),
            namespaces=FakeNamespaceBudgets(),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            pod = _pod(annotations)
            found = await provider.adopt(pod, FakeProgress(pod))
            nursery.cancel_scope.cancel()
    assert isinstance(found, Lost) is lost
    if not lost:
        assert found is None  # nothing to adopt: buy
