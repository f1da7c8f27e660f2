"""Namespace verbs: read one Namespace, and merge its annotations under a resourceVersion
precondition (what the namespace budgets of ``vk_trio.provider.namespace_budget`` need).

A merge patch whose ``metadata.resourceVersion`` is set is a compare-and-swap on the API
server: it applies only if the object is still at that version, and answers 409 otherwise
(``KubeConflict``, raised to the caller, which re-reads and decides again; it is not retried
here, since only the caller knows whether its change still holds). Transport errors, 5xx and
429 are retried inside ``KubeClient.request``, like every call.
"""

from __future__ import annotations

import msgspec

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeNotFound
from vk_trio.kube.models import ObjectMeta

__all__ = ["Namespace", "get_namespace", "patch_namespace_annotations"]

MERGE_PATCH = "application/merge-patch+json"


class Namespace(msgspec.Struct, gc=False, kw_only=True):
    """The part of a Namespace vk-trio reads: its metadata (annotations, resourceVersion)."""

    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)


def namespace_path(name: str) -> str:
    return f"/api/v1/namespaces/{name}"


async def get_namespace(client: KubeClient, name: str) -> Namespace | None:
    """The Namespace ``name``, or ``None`` if it does not exist."""
    try:
        return msgspec.convert(await client.request("GET", namespace_path(name)), Namespace)
    except KubeNotFound:
        return None


async def patch_namespace_annotations(
    client: KubeClient, name: str, *, resource_version: str, annotations: dict[str, str | None]
) -> Namespace | None:
    """Merge ``annotations`` (``None`` deletes a key) into Namespace ``name`` if it is still at
    ``resource_version``; the updated Namespace, ``None`` if it is gone, ``KubeConflict`` if it
    changed meanwhile."""
    body = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
    try:
        result = await client.request(
            "PATCH", namespace_path(name), json=body, content_type=MERGE_PATCH
        )
    except KubeNotFound:
        return None
    return msgspec.convert(result, Namespace)
