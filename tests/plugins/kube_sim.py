"""Fixtures for the Kubernetes API stand-in (``vk_trio.sim.kube``).

``kube_sim`` starts a fresh ``KubeSim`` on 127.0.0.1 with a free port in the test's nursery
(it is stopped when the test ends) and yields it: ``kube_sim.url`` is the base URL, and the
in-process helpers (``create``/``get``/``list``/``patch``/``delete``/``compact``/
``close_watches``/``wait_until``/``requests``) script and inspect the cluster state.
``kubeconfig`` writes a kubeconfig for it to ``tmp_path`` and returns the path.

The sim uses a short ``bookmark_interval`` (1 s) so tests that wait for a bookmark stay fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from vk_trio.sim.kube import KubeSim


@pytest.fixture
async def kube_sim(nursery: trio.Nursery) -> AsyncIterator[KubeSim]:
    sim = KubeSim(bookmark_interval=1.0)
    await nursery.start(sim.serve)
    yield sim


@pytest.fixture
def kubeconfig(kube_sim: KubeSim, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig.yaml"
    kube_sim.write_kubeconfig(path)
    return path
