"""In-memory fakes of what the Buyer is handed, when the Kubernetes side is not under test."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Literal

import trio

from vk_trio.kube.models import ConfigMap, Pod, Secret


class FakeProgress:
    """A pod's ``Progress``, kept in memory: ``waits`` holds every waiting reason shown."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.waits: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str, str | None]] = []
        """(type, reason, message, container) of every Event."""

    async def waiting(self, reason: str, message: str) -> None:
        self.waits.append((reason, message))

    async def event(
        self,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        *,
        log_as: str | None = None,
        container: str | None = None,
        init: bool = False,
    ) -> None:
        self.events.append((kind, reason, message, container))
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


class MemoryObjects:
    """Secrets and ConfigMaps of namespace ``ns`` in memory; ``reads`` counts lookups.

    Secret values are given as bytes or text and stored base64-encoded, as the API sends them.
    """

    def __init__(
        self,
        secrets: Mapping[str, Mapping[str, str | bytes]] | None = None,
        config_maps: Mapping[str, Mapping[str, str]] | None = None,
        binary: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> None:
        self.secrets = {
            name: Secret(data={key: _b64(value) for key, value in data.items()})
            for name, data in (secrets or {}).items()
        }
        names = {*(config_maps or {}), *(binary or {})}
        self.config_maps = {
            name: ConfigMap(
                data=dict((config_maps or {}).get(name, {})),
                binary_data=dict((binary or {}).get(name, {})),
            )
            for name in names
        }
        self.reads = 0

    async def secret(self, namespace: str, name: str) -> Secret | None:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        return self.secrets.get(name) if namespace == "ns" else None

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        return self.config_maps.get(name) if namespace == "ns" else None


def _b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()
