"""Fixtures of the end-to-end pod tests: ``cluster`` (the stand-in, or a real API server when
``VK_TRIO_TEST_KUBECONFIG`` names one) and ``node`` (``serve_node`` started against it and the
Vast simulator with the test settings of ``e2e.settings_for``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.e2e.cluster import Cluster, SimCluster, open_remote, remote_kubeconfig
from tests.e2e.e2e import settings_for
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.app import NodeRuntime, serve_node
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.vast import VastSim
from vk_trio.provider import agents


@pytest.fixture
def allow_loopback_endpoints() -> bool:
    """Whether the stand-in accepts EndpointSlices naming 127.0.0.1 (a real server refuses
    them): a module whose simulated instances listen on loopback overrides this with True."""
    return False


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, allow_loopback_endpoints: bool
) -> AsyncIterator[Cluster]:
    remote = remote_kubeconfig()
    if remote is None:
        sim = KubeSim(bookmark_interval=1.0, allow_loopback_endpoints=allow_loopback_endpoints)
        await nursery.start(sim.serve)
        sim.write_kubeconfig(tmp_path / "kubeconfig")
        yield SimCluster(sim, tmp_path / "kubeconfig")
        return
    real = await open_remote(remote)
    try:
        yield real
    finally:
        with trio.CancelScope(shield=True):
            for pod in await real.list("pods", real.namespace):
                await real.delete("pods", real.namespace, pod["metadata"]["name"], grace=0)
            await real.client.request("DELETE", f"/api/v1/namespaces/{real.namespace}")
            await real.client.aclose()


@pytest.fixture
async def node(nursery: trio.Nursery, vast_sim: VastSim, cluster: Cluster) -> NodeRuntime:
    runtime: NodeRuntime = await nursery.start(
        serve_node, settings_for(vast_sim.url, cluster.kubeconfig)
    )
    return runtime


# -- the agent's end-to-end tests (test_agent*.py): instances that run real processes ----------


@pytest.fixture
async def containers_sim(vast_sim_factory: VastSimFactory) -> VastSim:
    sim = await vast_sim_factory(run_containers=True, boot_seconds=0.2)
    if not sim.runs_containers:
        pytest.fail(f"the sandbox cannot run here: {sim._sandbox_problem}")
    return sim


@pytest.fixture
async def agent_node(
    nursery: trio.Nursery,
    containers_sim: VastSim,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
) -> NodeRuntime:
    monkeypatch.setattr(agents, "VOLUME_REFRESH", 1.0)
    settings = settings_for(
        containers_sim.url, cluster.kubeconfig, agent_url=containers_sim.agent_url
    )
    runtime: NodeRuntime = await nursery.start(serve_node, settings)
    return runtime
