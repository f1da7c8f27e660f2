"""Services (read) and the EndpointSlices vk-trio manages for them (written).

``watch_services`` keeps a picture of every Service in the cluster: it LISTs, yields the whole
picture, then WATCHes from the list's resourceVersion and yields the picture after every
change. Any failure (an expired resourceVersion, a broken stream, a 5xx, even a 403 while
RBAC is being fixed) relists after a capped backoff: Services are a side feature of the node
and must never stop it, so nothing escalates but cancellation.

EndpointSlices are written whole (create, or an unconditional PUT; both are idempotent for the
one writer that owns them, found by the ``endpointslice.kubernetes.io/managed-by`` label).
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeConflict, KubeError, KubeNotFound
from vk_trio.kube.models import Service
from vk_trio.retry import SERVICE_WATCH, Backoff

__all__ = [
    "SLICES",
    "delete_slice",
    "list_slices",
    "put_slice",
    "watch_services",
]

SLICES = "/apis/discovery.k8s.io/v1"

Services = dict[str, Service]
"""``namespace/name`` → Service."""


class _Envelope(msgspec.Struct):
    type: str
    object: dict[str, Any]


async def watch_services(
    client: KubeClient, *, backoff: Backoff = SERVICE_WATCH
) -> AsyncGenerator[Services, None]:
    """The cluster's Services after each change, forever (see the module docstring)."""
    failures = 0
    while True:
        try:
            raw = await client.request("GET", "/api/v1/services")
            services = {s.key: s for s in msgspec.convert(raw.get("items") or [], list[Service])}
            version = str(raw.get("metadata", {}).get("resourceVersion", ""))
            yield dict(services)
            failures = 0
            while True:  # re-watch from the last version until the server says it expired
                opened = trio.current_time()
                quiet = True
                stream = _watch(client, version)
                async with aclosing(stream) as changes:
                    async for kind, obj in changes:
                        quiet = False
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        if kind == "BOOKMARK":
                            continue
                        service = msgspec.convert(obj, Service)
                        if kind == "DELETED":
                            services.pop(service.key, None)
                        else:
                            services[service.key] = service
                        yield dict(services)
                if quiet and trio.current_time() - opened < 1.0:
                    await trio.sleep(backoff.first)  # a server closing at once: no hot loop
        except (KubeError, msgspec.ValidationError, _Expired) as exc:
            failures += 1
            delay = backoff.delay(failures)
            logger.warning("service watch failed; relisting", error=str(exc), retry_in=delay)
            await trio.sleep(delay)


class _Expired(Exception):
    """The watch's resourceVersion is too old, or the stream said ERROR: relist."""


async def _watch(
    client: KubeClient, version: str
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    params = {
        "watch": "1",
        "allowWatchBookmarks": "true",
        "resourceVersion": version,
        "timeoutSeconds": random.randint(300, 600),
    }
    async with client.stream_lines("/api/v1/services", params=params) as lines:
        async for line in lines:
            envelope = msgspec.json.decode(line, type=_Envelope)
            if envelope.type == "ERROR":
                raise _Expired(str(envelope.object.get("message") or envelope.object))
            yield envelope.type, envelope.object


def _slices(namespace: str | None = None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{SLICES}{where}/endpointslices"


async def list_slices(client: KubeClient, *, label_selector: str) -> list[dict[str, Any]]:
    """Every EndpointSlice in the cluster with these labels."""
    raw = await client.request("GET", _slices(), params={"labelSelector": label_selector})
    return list(raw.get("items") or [])


async def put_slice(client: KubeClient, body: dict[str, Any], *, exists: bool) -> None:
    """Replace the slice (``exists``: as far as the caller knows) or create it; either way
    round when the guess was wrong."""
    meta = body["metadata"]
    path = f"{_slices(meta['namespace'])}/{meta['name']}"
    if exists:
        try:
            await client.request("PUT", path, json=body)
            return
        except KubeNotFound:
            pass
    try:
        await client.request("POST", _slices(meta["namespace"]), json=body)
    except KubeConflict:
        await client.request("PUT", path, json=body)


async def delete_slice(client: KubeClient, namespace: str, name: str) -> None:
    """Delete the slice; one already gone is fine."""
    try:
        await client.request("DELETE", f"{_slices(namespace)}/{name}")
    except KubeNotFound:
        return
