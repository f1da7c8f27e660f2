"""Kubernetes Events about pods (what ``kubectl describe pod`` shows), aggregated like client-go.

Events are secondary: a failure to post one must never fail the work it describes (kopf
``events.py``). ``EventRecorder.emit`` therefore logs and swallows every error except
``trio.Cancelled`` (and other ``BaseException``s), which must propagate so cancellation works.

Aggregation (client-go ``events_cache.go``): the same (pod uid, type, reason, message) seen
again bumps ``count`` and ``lastTimestamp`` of the existing Event with a merge patch instead of
creating a new object, so a retry loop that fails every 10 s makes one Event with a growing
count, not thousands of objects. If that Event has expired (the apiserver's ``--event-ttl``,
1 h by default) the patch 404s and a fresh Event is created. The cache is an LRU of
``cache_size`` keys, bounded so a long-running node cannot grow it forever.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from loguru import logger

from vk_trio.kube.api import KubeClient, format_time, utcnow
from vk_trio.kube.errors import KubeNotFound
from vk_trio.kube.models import Pod, Service
from vk_trio.logs import scrub
from vk_trio.retry import KUBE_EVENT

__all__ = ["MESSAGE_MAX", "EventRecorder", "Involved"]

MESSAGE_MAX = 1024
"""Characters of ``message`` kept (the apiserver rejects notes above 1 KiB for new events)."""

_MERGE_PATCH = "application/merge-patch+json"


class Involved(NamedTuple):
    """The object an Event is about (``involvedObject``)."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str | None = None
    field_path: str = ""
    """The part of the object (``spec.containers{app}``), as the kubelet names a container."""

    @classmethod
    def of_pod(cls, pod: Pod, field_path: str = "") -> Involved:
        meta = pod.metadata
        return cls(
            "Pod", meta.name, meta.namespace or "default", pod.uid, meta.resource_version,
            field_path,
        )  # fmt: skip

    @classmethod
    def of_service(cls, service: Service) -> Involved:
        """The Service: ``kubectl describe service`` lists its Events."""
        meta = service.metadata
        return cls("Service", meta.name, meta.namespace, meta.uid, meta.resource_version)

    @classmethod
    def node(cls, name: str, uid: str = "") -> Involved:
        """The Node (cluster-scoped): ``kubectl describe node`` lists its Events."""
        return cls("Node", name, "", uid)


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int


class EventRecorder:
    """Posts (and aggregates) Events for pods on behalf of one node.

    ``component`` and ``host`` become ``source.component`` / ``source.host`` (and
    ``reportingComponent`` / ``reportingInstance``); ``host`` is the node name.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        component: str = "vk-trio",
        host: str,
        cache_size: int = 4096,
    ) -> None:
        self._client = client
        self._component = component
        self._host = host
        self._cache_size = cache_size
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()

    async def emit(
        self,
        pod: Pod,
        *,
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        field_path: str = "",
    ) -> None:
        """Record an Event about ``pod`` (``field_path``: one of its containers); never
        raises (but cancellation), failures are logged."""
        about = Involved.of_pod(pod, field_path)
        await self.emit_for(about, type=type, reason=reason, message=message)

    async def emit_for(
        self,
        about: Involved,
        *,
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        """Record an Event about any object (``Involved.node`` for the Node); never raises."""
        message = scrub(message)[:MESSAGE_MAX]
        key = (f"{about.uid or about.name}{about.field_path}", type, reason, message)
        try:
            seen = self._seen.get(key)
            if seen is not None:
                self._seen.move_to_end(key)
                if await self._bump(seen):
                    return
            await self._create(about, key, type=type, reason=reason, message=message)
        except Exception as error:
            # Secondary work: log and carry on (the object's status still tells the story).
            logger.warning(
                "could not post an event",
                event_type=type,
                reason=reason,
                kind=about.kind,
                name=about.name,
                uid=about.uid,
                error=str(error),
            )

    async def _bump(self, seen: _Seen) -> bool:
        """Count one more occurrence on the existing Event; ``False`` if it has expired."""
        body = {"count": seen.count + 1, "lastTimestamp": format_time(utcnow())}
        path = f"/api/v1/namespaces/{seen.namespace}/events/{seen.name}"
        try:
            await self._client.request(
                "PATCH", path, json=body, content_type=_MERGE_PATCH, retry=KUBE_EVENT
            )
        except KubeNotFound:
            return False
        seen.count += 1
        return True

    async def _create(
        self,
        about: Involved,
        key: tuple[str, str, str, str],
        *,
        type: str,
        reason: str,
        message: str,
    ) -> None:
        now = format_time(utcnow())
        # Events about a cluster-scoped object (the Node) live in "default", as the kubelet's.
        namespace = about.namespace or "default"
        # client-go: "<involved object name>.<unix nanos in hex>", unique enough per object.
        name = f"{about.name}.{time.time_ns():x}"
        involved: dict[str, Any] = {"kind": about.kind, "apiVersion": "v1", "name": about.name}
        if about.namespace:
            involved["namespace"] = about.namespace
        if about.uid:
            involved["uid"] = about.uid
        if about.resource_version:
            involved["resourceVersion"] = about.resource_version
        if about.field_path:
            involved["fieldPath"] = about.field_path
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self._component, "host": self._host},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self._component,
            "reportingInstance": self._host,
        }
        # Reserve the key first, so a concurrent emit of the same event bumps instead of
        # creating a twin; forget it again if the create fails.
        self._seen[key] = _Seen(namespace=namespace, name=name, count=1)
        self._seen.move_to_end(key)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
        try:
            await self._client.request(
                "POST", f"/api/v1/namespaces/{namespace}/events", json=body, retry=KUBE_EVENT
            )
        except BaseException:
            self._seen.pop(key, None)
            raise
