"""The stand-in's HTTP surface, request side and wire side: resource URLs parsed into a
``Target``, bodies decoded and validated, selectors and pages, watch events encoded."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from vk_trio.devtools.sim.kube import openapi as kube_openapi
from vk_trio.devtools.sim.kube import patch as kube_patch
from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, RESOURCES, Obj, Resource
from vk_trio.devtools.sim.kube.selector import Matcher, parse_field_selector, parse_label_selector
from vk_trio.devtools.sim.kube.store import ApiError
from vk_trio.http_server import Request


@dataclass(frozen=True)
class Target:
    """A parsed resource URL."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None
    template: str
    """The path with ``{namespace}``/``{name}`` placeholders, for ``KubeSim.requests``."""


def resource_of_kind(kind: str) -> Resource:
    """The resource of ``kind``; ``ValueError`` for a kind the stand-in does not serve."""
    for resource in RESOURCES:
        if resource.kind == kind:
            return resource
    raise ValueError(f"unknown kind {kind!r}")


def parse_target(path: str) -> Target | None:
    """``/api/v1/...`` or ``/apis/{group}/{version}/...`` as a ``Target``; None otherwise."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest, prefix = "", "v1", parts[2:], "/api/v1"
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
        prefix = f"/apis/{group}/{version}"
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and _lookup(group, version, rest[2]):
        namespace, rest = rest[1], rest[2:]
        prefix += "/namespaces/{namespace}"
    resource = _lookup(group, version, rest[0]) if rest else None
    if resource is None or len(rest) > 3:
        return None
    if namespace is not None and not resource.namespaced:
        return None
    if namespace is None and resource.namespaced and len(rest) > 1:
        return None
    template = "/".join(
        [prefix, resource.plural, *(["{name}"] if len(rest) > 1 else []), *rest[2:]]
    )
    name = rest[1] if len(rest) > 1 else None
    return Target(resource, namespace, name, rest[2] if len(rest) > 2 else None, template)


def _lookup(group: str, version: str, plural: str) -> Resource | None:
    resource = BY_PLURAL.get(plural)
    if resource is None or resource.group != group or resource.version != version:
        return None
    return resource


def truthy(value: str | None) -> bool:
    """A boolean query parameter: ``1``, ``true``, ``t`` or ``yes``, in any case."""
    return (value or "").lower() in ("1", "true", "t", "yes")


def wants_table(request: Request) -> bool:
    """Whether the client asked for a server-side printed Table (``kubectl get`` does)."""
    return "as=Table" in request.headers.get("accept", "")


def json_body(request: Request) -> Obj:
    """The request body, which must be a JSON object (a 400 otherwise, as the apiserver answers)."""
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


def field_warnings(request: Request, resource: Resource, body: Any) -> list[str]:
    """Field validation of a written body (``kube_openapi.decode``); JSON patches, lists of
    operations, are not checked."""
    if request.headers.get("content-type", "").startswith("application/json-patch+json"):
        return []
    return kube_openapi.decode(resource, body, request.param("fieldValidation"))


SCALABLE = frozenset({"Deployment", "ReplicaSet"})
"""Kinds with a ``scale`` subresource."""


def scale_of(obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale view of a scalable object (its ``scale`` subresource)."""
    meta = obj["metadata"]
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def patched_view(target: Obj, content_type: str, patch: Any) -> Obj:
    """``patch`` applied to ``target`` (a subresource view, which the store does not keep)."""
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json-patch+json":
            result = kube_patch.json_patch(target, patch)
        elif media == "application/strategic-merge-patch+json":
            result = kube_patch.strategic_merge_patch(target, patch)
        else:
            result = kube_patch.merge_patch(target, patch)
    except kube_patch.PatchError as error:
        raise ApiError(error.status, "BadRequest", str(error)) from error
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "patch produced something that is not an object")
    return result


def request_matcher(request: Request, *, name: str | None = None) -> Matcher:
    """The request's field and label selectors; ``name`` (a watch on one object's URL)
    narrows it further to that object."""
    by_field = parse_field_selector(request.param("fieldSelector"))
    by_label = parse_label_selector(request.param("labelSelector"))
    return lambda obj: (
        by_field(obj) and by_label(obj) and name in (None, obj["metadata"].get("name"))
    )


def paginate(items: list[Obj], request: Request) -> tuple[list[Obj], str]:
    """Apply ``continue`` (a token naming the last key served) and ``limit``."""
    token = request.param("continue")
    if token:
        after = msgspec.json.decode(base64.urlsafe_b64decode(token))
        items = [i for i in items if _sort_key(i) > tuple(after)]
    limit = int(request.param("limit") or 0)
    if limit <= 0 or len(items) <= limit:
        return items, ""
    page = items[:limit]
    return page, base64.urlsafe_b64encode(msgspec.json.encode(_sort_key(page[-1]))).decode()


def _sort_key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def method_not_allowed() -> ApiError:
    """The apiserver's 405 for a verb a resource does not support."""
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def encode_event(kind: str, obj: Obj) -> bytes:
    """One watch event as a line of the JSON stream."""
    return msgspec.json.encode({"type": kind, "object": obj}) + b"\n"


def bookmark_event(resource: Resource, rv: int, *, initial_events_end: bool = False) -> bytes:
    """A BOOKMARK event carrying only ``rv`` (and, if asked, the end of the initial events)."""
    metadata: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": metadata}
    return encode_event("BOOKMARK", obj)


async def one_event_stream(kind: str, obj: Obj) -> AsyncIterator[bytes]:
    """A watch stream of one event: the ERROR answering a watch from an expired version."""
    yield encode_event(kind, obj)
