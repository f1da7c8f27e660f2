"""EndpointSlices for Services that route to the node's pods at their public endpoints.

A pod on the virtual node is reached at the public ``ip:port`` its backend mapped to each
container port (the ``vast.ai/endpoints`` record on the pod), not at ``podIP:containerPort``.
The cluster's EndpointSlice controller writes ``podIP:targetPort`` slices for every Service
with a ``spec.selector``, and kube-proxy merges every slice of a Service, so a selector
Service can never route right. The interface is therefore a Service **without** a selector,
annotated ``vast.ai/selector: "app=..."`` (label-selector syntax): this controller writes its
slices (labels ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by:
vk-trio.vast.ai``, owned by the Service), one per distinct port mapping (host ports differ
per instance), each Service port's ``targetPort`` (number or container-port name) mapped to
that pod's host port, ``ready`` from the pod's Ready condition. A Service *with* a selector
that matches pods of this node gets a Warning Event that says so.

Inputs: the node's pods, as the dispatcher sees them (``pod_event``, never blocking), and the
cluster's Services (``watch_services``). Nothing is written before both have been listed
once, so a restart never empties a slice. Owns the slices it manages, and only those: any
managed slice that no annotated Service wants is deleted. Retries every failed write with a
capped backoff; nothing escalates (routing is a side feature; the pods run regardless).
A slice the server refuses (422 Invalid, e.g. an address in the loopback or link-local range)
is permanent: the Service gets a ``FailedToUpdateEndpointSlices`` Warning Event with the
server's words, as from the cluster's EndpointSlice controller, once per refusal, and that
slice is not sent again until what it should hold changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

import trio
from loguru import logger

from vk_trio.annotations import ENDPOINTS, SERVICE_SELECTOR
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError, KubeInvalid
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.kube.models import Pod, Service
from vk_trio.kube.services import delete_slice, list_slices, put_slice, watch_services
from vk_trio.kube.watch import PodEvent
from vk_trio.retry import ENDPOINT_WRITE

__all__ = [
    "MANAGED_BY",
    "EndpointsController",
    "Selector",
    "parse_selector",
]

MANAGED_BY = "vk-trio.vast.ai"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Obj = dict[str, Any]
SliceKey = tuple[str, str]
"""(namespace, name) of an EndpointSlice."""


# -- label selectors --------------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]
"""(key, operator, values): operators ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``."""


class Selector:
    """A parsed label selector (``app=x,tier!=db,env in (a,b),!legacy``)."""

    def __init__(self, requirements: list[Requirement]) -> None:
        self.requirements = requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.requirements:
            value = labels.get(key)
            ok = {
                "=": value in values,
                "in": value in values,
                "!=": value not in values,
                "notin": value not in values,
                "exists": value is not None,
                "!": value is None,
            }[op]
            if not ok:
                return False
        return True


_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ = re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$")
_KEY = re.compile(r"^(!?)\s*([\w./-]+)$")


def parse_selector(text: str) -> Selector:
    """Parse label-selector syntax; ``ValueError`` says what is wrong. An empty selector is
    refused: it would select every pod of the namespace."""
    parts = [p.strip() for p in re.split(r",(?![^()]*\))", text) if p.strip()]
    if not parts:
        raise ValueError("empty selector")
    requirements: list[Requirement] = []
    for part in parts:
        if m := _SET.match(part):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            requirements.append((m[1], m[2], values))
        elif m := _EQ.match(part):
            requirements.append((m[1], "!=" if m[2] == "!=" else "=", frozenset({m[3]})))
        elif m := _KEY.match(part):
            requirements.append((m[2], "!" if m[1] else "exists", frozenset()))
        else:
            raise ValueError(f"cannot parse {part!r}")
    return Selector(requirements)


# -- the controller ---------------------------------------------------------------------------


class EndpointsController:
    """Keeps the managed EndpointSlices equal to what the annotated Services select."""

    def __init__(self, kube: KubeClient, events: EventRecorder, *, node_name: str) -> None:
        self._kube = kube
        self._events = events
        self._node = node_name
        self._pods: dict[str, Pod] = {}
        self._pods_synced = False
        self._services: dict[str, Service] | None = None
        self._written: dict[SliceKey, Obj] | None = None
        """The managed slices as last written or listed (``_comparable``); None: not listed."""
        self._warned: dict[str, str] = {}
        """Service uid → the last warning sent about it (each is said once)."""
        self._refused: dict[SliceKey, Obj] = {}
        """Slices the server refused (422) → the refused body (``_comparable``): not sent
        again while the desired body stays the same."""
        self._dirty = trio.Event()

    def pod_event(self, event: PodEvent) -> None:
        """Called by the dispatcher for every pod event; never blocks."""
        if event.type == "SYNCED":
            self._pods_synced = True
        elif event.pod is not None:
            if event.type == "DELETED":
                self._pods.pop(event.pod.uid, None)
            else:
                self._pods[event.pod.uid] = event.pod
        self._dirty.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch Services and reconcile slices on every change, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            task_status.started()
            retry = ENDPOINT_WRITE.delays()
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                if not self._pods_synced or self._services is None:
                    continue
                try:
                    await self._reconcile(self._services)
                    retry.reset()
                except KubeError as exc:
                    delay = retry.next()
                    logger.warning("endpointslice sync failed", error=str(exc), retry_in=delay)
                    self._written = None  # relist: a write may have half-happened
                    await trio.sleep(delay)
                    self._dirty.set()

    async def _watch(self) -> None:
        async with aclosing(watch_services(self._kube)) as pictures:
            async for services in pictures:
                self._services = services
                self._dirty.set()

    async def _reconcile(self, services: dict[str, Service]) -> None:
        desired: dict[SliceKey, Obj] = {}
        owners: dict[SliceKey, Service] = {}
        for service in services.values():
            for body in await self._slices_for(service):
                meta = body["metadata"]
                desired[meta["namespace"], meta["name"]] = body
                owners[meta["namespace"], meta["name"]] = service
        self._refused = {k: v for k, v in self._refused.items() if k in desired}
        if self._written is None:
            listed = await list_slices(
                self._kube, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
            )
            self._written = {
                (s["metadata"]["namespace"], s["metadata"]["name"]): _comparable(s) for s in listed
            }
        for key, body in desired.items():
            wanted = _comparable(body)
            if self._written.get(key) == wanted or self._refused.get(key) == wanted:
                continue
            try:
                await put_slice(self._kube, body, exists=key in self._written)
            except KubeInvalid as exc:
                self._refused[key] = wanted
                await self._refusal(owners[key], key, exc)
                continue
            self._refused.pop(key, None)
            self._written[key] = wanted
            logger.info("endpointslice written", slice="/".join(key), endpoints=_count(body))
        for key in [k for k in self._written if k not in desired]:
            await delete_slice(self._kube, *key)
            del self._written[key]
            logger.info("endpointslice deleted", slice="/".join(key))

    async def _slices_for(self, service: Service) -> list[Obj]:
        namespace = service.metadata.namespace
        ours = [p for p in self._pods.values() if p.metadata.namespace == namespace]
        raw = service.metadata.annotations.get(SERVICE_SELECTOR)
        if service.spec.selector:
            matched = [p for p in ours if _selects(service.spec.selector, p)]
            if matched:
                await self._warn(
                    service,
                    "SelectorMatchesVirtualNodePods",
                    f"spec.selector matches pods on the virtual node {self._node} "
                    f"({', '.join(sorted(p.metadata.name for p in matched)[:3])}): they are "
                    "reached at public host ports, not podIP:targetPort, so this Service "
                    "cannot route to them; remove spec.selector and annotate the Service "
                    f'{SERVICE_SELECTOR}: "<the same selector>" (see the README)',
                )
            return []
        if raw is None:
            return []
        try:
            selector = parse_selector(raw)
        except ValueError as exc:
            await self._warn(service, "InvalidSelector", f"{SERVICE_SELECTOR} {raw!r}: {exc}")
            return []
        selected = [
            p
            for p in ours
            if selector.matches(p.metadata.labels) and not p.is_deleting and not p.is_terminal
        ]
        return _slice_bodies(service, selected, self._node)

    async def _refusal(self, service: Service, key: SliceKey, exc: KubeInvalid) -> None:
        """Tell a permanent refusal once: in the log and on the Service (what the cluster's
        EndpointSlice controller says when its write fails)."""
        logger.warning("endpointslice refused; not retried", slice="/".join(key), error=str(exc))
        meta = service.metadata
        message = f"Error updating Endpoint Slices for Service {meta.namespace}/{meta.name}: {exc}"
        await self._events.emit_for(
            Involved.of_service(service),
            type="Warning",
            reason="FailedToUpdateEndpointSlices",
            message=message,
        )

    async def _warn(self, service: Service, reason: str, message: str) -> None:
        if self._warned.get(service.metadata.uid) == message:
            return
        self._warned[service.metadata.uid] = message
        await self._events.emit_for(
            Involved.of_service(service), type="Warning", reason=reason, message=message
        )


def _selects(selector: Mapping[str, str], pod: Pod) -> bool:
    return all(pod.metadata.labels.get(k) == v for k, v in selector.items())


def _ready(pod: Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def _public(pod: Pod) -> dict[str, str]:
    """The pod's container port spec ("8000/tcp") → public "ip:port" record."""
    try:
        record = json.loads(pod.metadata.annotations.get(ENDPOINTS) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}


def _container_port(pod: Pod, target: int | str) -> int | None:
    if isinstance(target, int):
        return target
    for container in pod.spec.containers:
        for port in container.ports:
            if port.name == target:
                return port.container_port
    return None


PortMapping = tuple[tuple[str, int, str], ...]
"""(service port name, host port, protocol) for each Service port the pod serves."""


def _mapping(service: Service, pod: Pod) -> tuple[PortMapping, str] | None:
    """How the Service's ports reach ``pod``: its host ports and public address."""
    public = _public(pod)
    ports: list[tuple[str, int, str]] = []
    address = None
    for port in service.spec.ports:
        target = port.target_port if port.target_port is not None else port.port
        number = _container_port(pod, target)
        found = public.get(f"{number}/{port.protocol.lower()}") if number else None
        if found is None:
            continue
        host, _, host_port = found.rpartition(":")
        address = host.strip("[]")
        ports.append((port.name, int(host_port), port.protocol))
    return (tuple(ports), address) if ports and address else None


def _slice_bodies(service: Service, pods: list[Pod], node: str) -> list[Obj]:
    meta = service.metadata
    groups: dict[tuple[PortMapping, str], list[Obj]] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        found = _mapping(service, pod)
        if found is None:
            continue
        ports, address = found
        family = "IPv6" if ":" in address else "IPv4"
        ready = _ready(pod)
        groups.setdefault((ports, family), []).append(
            {
                "addresses": [address],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": node,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod.metadata.namespace,
                    "name": pod.metadata.name,
                    "uid": pod.uid,
                },
            }
        )
    bodies = []
    for (ports, family), endpoints in sorted(groups.items()):
        digest = hashlib.sha256(repr((ports, family)).encode()).hexdigest()[:10]
        bodies.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{meta.name}-vast-{digest}",
                    "namespace": meta.namespace,
                    "labels": {SERVICE_NAME_LABEL: meta.name, MANAGED_BY_LABEL: MANAGED_BY},
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": meta.name,
                            "uid": meta.uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "addressType": family,
                "ports": [
                    {"name": name, "port": port, "protocol": protocol}
                    for name, port, protocol in ports
                ],
                "endpoints": endpoints,
            }
        )
    return bodies


def _comparable(body: Obj) -> Obj:
    """What of a slice this controller decides (server-added metadata aside)."""
    meta = body.get("metadata") or {}
    return {
        "labels": meta.get("labels") or {},
        "owners": [r.get("uid") for r in meta.get("ownerReferences") or []],
        "addressType": body.get("addressType"),
        "ports": body.get("ports") or [],
        "endpoints": body.get("endpoints") or [],
    }


def _count(body: Obj) -> int:
    return len(body.get("endpoints") or [])
