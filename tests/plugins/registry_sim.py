"""Fixtures for the registry simulator: a running ``RegistrySim`` on a real socket.

``registry_sim`` serves on 127.0.0.1 with Bearer auth and one user (``USER``/``PASSWORD``)
for private repositories, in the test's nursery (it stops when the test ends); add images
with ``registry_sim.add_image(...)`` and refer to them as ``f"{registry_sim.host}/name:tag"``.
``registry_sim_factory(**kwargs)`` starts one with other ``RegistrySim`` arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from vk_trio.devtools.sim.registry import RegistrySim

USER = "puller"
PASSWORD = "registry-sim-password-5f1c"

RegistrySimFactory = Callable[..., Awaitable[RegistrySim]]


@pytest.fixture
async def registry_sim_factory(nursery: trio.Nursery) -> RegistrySimFactory:
    """Start registry simulators with custom ``RegistrySim`` arguments (users default to
    ``{USER: PASSWORD}``)."""

    async def start(**kwargs: Any) -> RegistrySim:
        sim = RegistrySim(**{"users": {USER: PASSWORD}, **kwargs})
        await nursery.start(sim.serve)
        return sim

    return start


@pytest.fixture
async def registry_sim(registry_sim_factory: RegistrySimFactory) -> RegistrySim:
    """A serving registry simulator with Bearer auth; ``.host`` is ``127.0.0.1:PORT``."""
    return await registry_sim_factory()
