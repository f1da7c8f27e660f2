"""Fixtures for the Vast.ai simulator: a running ``VastSim`` on a real socket.

``vast_sim`` is the one most tests want: fast boots (0.2 s), no rate limits, default seed.
``vast_sim_factory`` starts one with any ``VastSimConfig`` field changed, e.g.
``sim = await vast_sim_factory(rate_limits="real", faults=Faults(oci_failure=1.0))``.
Both run in the test's nursery, so the server stops when the test ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from vk_trio.devtools.sim.vast import VastSim, VastSimConfig

VastSimFactory = Callable[..., Awaitable[VastSim]]
"""``await vast_sim_factory(**config_fields) -> VastSim`` (already serving, ``.url`` set)."""

FAST = {"boot_seconds": 0.2, "rate_limits": "off"}
"""Test defaults: instances run after 0.2 s and nothing is rate limited."""


@pytest.fixture
async def vast_sim_factory(nursery: trio.Nursery) -> VastSimFactory:
    """Start simulators with custom configs (test defaults: ``FAST``, overridable)."""

    async def start(**fields: Any) -> VastSim:
        sim = VastSim(VastSimConfig(**{**FAST, **fields}))
        await nursery.start(sim.serve)
        return sim

    return start


@pytest.fixture
async def vast_sim(vast_sim_factory: VastSimFactory) -> VastSim:
    """A serving simulator with the ``FAST`` defaults; ``vast_sim.url`` is its base URL."""
    return await vast_sim_factory()
