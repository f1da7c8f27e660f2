"""The kubelet half on fake time: the real dispatcher, supervisor and reporter, the real
pod watch over the Kubernetes stand-in, and a ``FakeProvider`` behind the seam.

The clock is Trio's ``MockClock`` with a small autojump threshold (trio's own
``test_dtls.py`` does this for tests with real sockets): virtual time jumps only after 50 ms
of real idleness, so a backoff of minutes costs nothing while socket I/O is never mistaken
for idleness. Settings are production defaults (15 s first backoff, 300 s cap, 10 min
reset, 3 machine failures), so the times asserted are the ones users get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from tests.node.fakes import FakeProvider
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.events import EventRecorder
from vk_trio.kube.watch import watch_pods
from vk_trio.node.dispatch import Dispatcher
from vk_trio.node.services import NodeServices

NODE = "vk-fake"
NAMESPACE = "default"
Obj = dict[str, Any]


@pytest.fixture
def jumpy_clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)


@dataclass
class Harness:
    sim: KubeSim
    provider: FakeProvider
    services: NodeServices
    nursery: trio.Nursery
    dispatcher: Dispatcher | None = None
    _scope: trio.CancelScope | None = None

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run a node (one process's worth: watch, dispatcher, pod supervisors)."""
        with trio.CancelScope() as self._scope:
            self.dispatcher = Dispatcher(self.services)
            async with trio.open_nursery() as node:
                kube = self.services.kube
                name = self.services.settings.node_name
                await node.start(self.dispatcher.run, watch_pods(kube, node_name=name))
                await self.dispatcher.wait_synced()
                task_status.started()

    async def restart(self) -> None:
        """Stop the node as SIGTERM does (nothing is released) and start another one."""
        assert self._scope is not None
        self._scope.cancel()
        await self.nursery.start(self.start)

    def create(self, name: str, **spec: Any) -> Obj:
        metadata = spec.pop("metadata", {})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, **metadata},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "main", "image": "busybox"}],
                **spec,
            },
        }
        return self.sim.create(pod)

    def pod(self, name: str) -> Obj | None:
        return self.sim.get("pods", NAMESPACE, name)

    def delete(self, name: str) -> None:
        self.sim.delete("pods", NAMESPACE, name, grace_seconds=30)

    async def until(self, name: str, check: Callable[[Obj], bool], within: float = 3600) -> Obj:
        """The pod, once ``check`` holds (virtual seconds ``within``)."""
        found: list[Obj] = []

        def probe(sim: KubeSim) -> bool:
            pod = sim.get("pods", NAMESPACE, name)
            if pod is not None and check(pod):
                found.append(pod)
                return True
            return False

        with trio.fail_after(within):
            await self.sim.wait_until(probe)
        return found[-1]

    async def gone(self, name: str, within: float = 3600) -> None:
        with trio.fail_after(within):
            await self.sim.wait_until(lambda sim: sim.get("pods", NAMESPACE, name) is None)

    def events(self, name: str) -> list[Obj]:
        return [
            e
            for e in self.sim.list("events", NAMESPACE)
            if e.get("involvedObject", {}).get("name") == name
        ]

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(name)]


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def harness(
    jumpy_clock: MockClock, nursery: trio.Nursery, tmp_path: Path, provider: FakeProvider
) -> AsyncIterator[Harness]:
    sim = KubeSim(bookmark_interval=60.0)  # about the real server's pace
    await nursery.start(sim.serve)
    sim.write_kubeconfig(tmp_path / "kubeconfig")
    settings = Settings(node_name=NODE, kubeconfig=str(tmp_path / "kubeconfig"))
    async with KubeClient.from_config(await load_config(kubeconfig=settings.kubeconfig)) as kube:
        services = NodeServices(
            settings=settings,
            kube=kube,
            events=EventRecorder(kube, component="vk-trio", host=NODE),
            provider=provider,
        )
        async with trio.open_nursery() as nodes:
            harness = Harness(sim, provider, services, nodes)
            await nodes.start(harness.start)
            yield harness
            nodes.cancel_scope.cancel()


def container(pod: Obj) -> Obj:
    statuses: list[Obj] = pod.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0]


def waiting(pod: Obj) -> str | None:
    reason: str | None = (container(pod).get("state", {}).get("waiting") or {}).get("reason")
    return reason


def phase(pod: Obj) -> str | None:
    value: str | None = pod.get("status", {}).get("phase")
    return value


def restarts(pod: Obj) -> int:
    count: int = container(pod).get("restartCount", 0)
    return count
