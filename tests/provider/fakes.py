"""In-memory fakes of what the Buyer is handed, when the Kubernetes side is not under test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import trio

from vk_trio.kube.models import Pod


class FakeProgress:
    """A pod's ``Progress``, kept in memory: ``waits`` holds every waiting reason shown."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.waits: list[tuple[str, str]] = []

    async def waiting(self, reason: str, message: str) -> None:
        self.waits.append((reason, message))

    async def event(
        self,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        *,
        log_as: str | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()

    async def annotate(self, annotations: Mapping[str, str | None]) -> None:
        await trio.lowlevel.checkpoint()


class FakeNamespaceBudgets:
    """Namespaces without a budget: every hold fits, nothing is written."""

    async def hold(self, pod: Pod, price: float) -> None:
        await trio.lowlevel.checkpoint()

    async def release(self, pod: Pod) -> None:
        await trio.lowlevel.checkpoint()

    def holding(self, pod: Pod) -> bool:
        return False


class FakeObjects:
    """A namespace with no Secrets or ConfigMaps."""

    async def secret(self, namespace: str, name: str) -> None:
        return None

    async def config_map(self, namespace: str, name: str) -> None:
        return None
