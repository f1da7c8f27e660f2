"""The cluster an end-to-end test drives: the in-process stand-in, or a real API server.

By default tests get ``SimCluster`` (the ``kube_sim`` fixture): fast, and able to break things
on purpose (``compact``, ``close_watches``). With ``VK_TRIO_TEST_KUBECONFIG=/path/to/config``
they get ``RemoteCluster``, which does the same through the API server's HTTP interface with
vk-trio's own client, so the very same tests check vk-trio against a real cluster. Tests that
need a fault only the stand-in can cause call ``require_sim()`` and are skipped remotely.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeNotFound

Obj = dict[str, Any]
T = TypeVar("T")
REMOTE_ENV = "VK_TRIO_TEST_KUBECONFIG"

_PATHS = {
    "pods": "/api/v1/namespaces/{ns}/pods",
    "events": "/api/v1/namespaces/{ns}/events",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "daemonsets": "/apis/apps/v1/namespaces/{ns}/daemonsets",
    "services": "/api/v1/namespaces/{ns}/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    "nodes": "/api/v1/nodes",
    "namespaces": "/api/v1/namespaces",
}


class Cluster(Protocol):
    kubeconfig: Path
    namespace: str
    """Where this test's objects live (a fresh namespace on a real cluster)."""

    async def create(self, obj: Obj) -> Obj: ...
    async def get(self, plural: str, namespace: str | None, name: str) -> Obj | None: ...
    async def list(self, plural: str, namespace: str) -> list[Obj]: ...
    async def patch(self, plural: str, namespace: str, name: str, patch: Obj) -> Obj: ...
    async def delete(self, plural: str, namespace: str, name: str, *, grace: int) -> None: ...
    async def wait_for(self, probe: Callable[[], Awaitable[T | None]]) -> T: ...
    def require_sim(self) -> KubeSim: ...


class SimCluster:
    """The in-process stand-in; waits wake on its changes, never on a timer."""

    def __init__(self, sim: KubeSim, kubeconfig: Path) -> None:
        self.sim = sim
        self.kubeconfig = kubeconfig
        self.namespace = "default"

    async def create(self, obj: Obj) -> Obj:
        return self.sim.create(obj)

    async def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        return self.sim.get(plural, namespace, name)

    async def list(self, plural: str, namespace: str) -> list[Obj]:
        return self.sim.list(plural, namespace)

    async def patch(self, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        return self.sim.patch(plural, namespace, name, patch)

    async def delete(self, plural: str, namespace: str, name: str, *, grace: int) -> None:
        self.sim.delete(plural, namespace, name, grace_seconds=grace)

    async def wait_for(self, probe: Callable[[], Awaitable[T | None]]) -> T:
        while (value := await probe()) is None:
            await self.sim.store.changed()  # wakes on the stand-in's next write or request
        return value

    def require_sim(self) -> KubeSim:
        return self.sim


class RemoteCluster:
    """Any API server, through vk-trio's own client; waits poll (a real server has no hook)."""

    POLL = 0.1

    def __init__(self, client: KubeClient, kubeconfig: Path, namespace: str) -> None:
        self.client = client
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    @staticmethod
    def _path(plural: str, namespace: str | None, name: str | None = None) -> str:
        base = _PATHS[plural].format(ns=namespace)
        return f"{base}/{name}" if name else base

    async def create(self, obj: Obj) -> Obj:
        plural = obj["kind"].lower() + "s"
        namespace = obj.get("metadata", {}).get("namespace")
        result: Obj = await self.client.request("POST", self._path(plural, namespace), json=obj)
        return result

    async def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        try:
            result: Obj = await self.client.request("GET", self._path(plural, namespace, name))
        except KubeNotFound:
            return None
        return result

    async def list(self, plural: str, namespace: str) -> list[Obj]:
        result: Obj = await self.client.request("GET", self._path(plural, namespace))
        return list(result.get("items") or [])

    async def patch(self, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        result: Obj = await self.client.request(
            "PATCH",
            self._path(plural, namespace, name),
            json=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, plural: str, namespace: str, name: str, *, grace: int) -> None:
        await self.client.request(
            "DELETE",
            self._path(plural, namespace, name),
            json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace},
        )

    async def wait_for(self, probe: Callable[[], Awaitable[T | None]]) -> T:
        # A real API server has no change hook to wait on; polling is the honest option.
        while (value := await probe()) is None:  # noqa: ASYNC110
            await trio.sleep(self.POLL)
        return value

    def require_sim(self) -> KubeSim:
        pytest.skip("needs a fault only the in-process stand-in can inject")


def remote_kubeconfig() -> Path | None:
    path = os.environ.get(REMOTE_ENV)
    return Path(path) if path else None


async def open_remote(kubeconfig: Path) -> RemoteCluster:
    """A client for the real cluster, and a fresh namespace for one test."""
    client = KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig)))
    cluster = RemoteCluster(client, kubeconfig, f"vk-e2e-{uuid.uuid4().hex[:8]}")
    await cluster.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.namespace}}
    )
    return cluster
