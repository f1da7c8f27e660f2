"""Pod verbs the lifecycle needs: patch status/annotations, delete, and read what pods reference
(``KubeObjects``: the Secrets and ConfigMaps a pod names, for the provider).

Rules (kopf ``patching.py``, the kubelet's ``PatchPodStatus``):

- Every write carries the pod's uid as a precondition, so a same-name pod re-created by a
  controller is never touched by work meant for its predecessor.
- 404 means "already done": the patch helpers return ``None``, ``delete_pod`` returns.
- Status goes out as a strategic-merge patch: conditions merge by ``type``, so the scheduler's
  ``PodScheduled`` (and anyone else's) survive; a JSON merge patch or a PUT would drop them.
- A 409 on a uid-preconditioned patch means the uid no longer matches (the apiserver retries
  its own storage conflicts for patches). We re-read the pod: a different uid (or none) means
  our pod is gone, ``None``; the same uid means a genuine race, so we retry a few times.

Transport errors, 5xx and 429 are retried inside ``KubeClient.request``; what is left
(``KubeForbidden``, ``KubeInvalid``, exhausted temporaries) propagates to the caller.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from loguru import logger

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeConflict, KubeNotFound
from vk_trio.kube.models import ConfigMap, Pod, Secret

__all__ = [
    "KubeObjects",
    "delete_pod",
    "get_config_map",
    "get_pod",
    "get_secret",
    "patch_pod_annotations",
    "patch_pod_status",
    "pod_path",
]

SMP = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"

CONFLICT_RETRIES = 3
"""Times a 409 on a patch is retried while the pod still has our uid."""

_T = TypeVar("_T")


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def _decode(data: Any, type_: type[_T]) -> _T:
    return msgspec.convert(data, type_)


async def _patch_with_uid(
    client: KubeClient, pod: Pod, path: str, body: dict[str, Any], content_type: str
) -> Pod | None:
    """PATCH ``path`` with a uid-preconditioned ``body``; ``None`` when the pod is gone."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            result = await client.request("PATCH", path, json=body, content_type=content_type)
        except KubeNotFound:
            return None
        except KubeConflict as error:
            current = await get_pod(client, pod.metadata.namespace, pod.metadata.name)
            if current is None or current.uid != pod.uid:
                logger.info("pod replaced or removed; patch dropped", pod=pod.key, uid=pod.uid)
                return None
            if attempt >= CONFLICT_RETRIES:
                raise
            logger.info(
                "conflict on pod patch; retrying", pod=pod.key, uid=pod.uid, error=str(error)
            )
            continue
        return _decode(result, Pod)
    raise AssertionError("unreachable")  # pragma: no cover


async def patch_pod_status(client: KubeClient, pod: Pod, status: dict[str, Any]) -> Pod | None:
    """Strategic-merge ``status`` into ``pod``'s status; the updated Pod, or ``None`` if gone.

    ``status`` holds only the fields we own (phase, our conditions, containerStatuses, IPs,
    ...); omitted fields stay as they are on the server.
    """
    body = {"metadata": {"uid": pod.uid}, "status": status}
    path = pod_path(pod.metadata.namespace, pod.metadata.name) + "/status"
    return await _patch_with_uid(client, pod, path, body, SMP)


async def patch_pod_annotations(
    client: KubeClient, pod: Pod, annotations: dict[str, str | None]
) -> Pod | None:
    """Merge ``annotations`` into the pod's (a ``None`` value deletes that key).

    The updated Pod, or ``None`` when the pod (with this uid) no longer exists.
    """
    body = {"metadata": {"uid": pod.uid, "annotations": annotations}}
    path = pod_path(pod.metadata.namespace, pod.metadata.name)
    return await _patch_with_uid(client, pod, path, body, MERGE_PATCH)


async def delete_pod(client: KubeClient, pod: Pod, *, grace_period_seconds: int = 0) -> None:
    """Delete this pod object (the kubelet's final step once the workload is stopped).

    The uid precondition keeps a re-created same-name pod alive: the apiserver answers 409,
    which like 404 means "our pod is already gone" and returns normally.
    """
    body = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": grace_period_seconds,
        "preconditions": {"uid": pod.uid},
    }
    try:
        await client.request(
            "DELETE", pod_path(pod.metadata.namespace, pod.metadata.name), json=body
        )
    except KubeNotFound:
        logger.debug("pod already deleted", pod=pod.key, uid=pod.uid)
    except KubeConflict:
        logger.info("pod uid no longer matches; not deleting the new pod", pod=pod.key, uid=pod.uid)


async def _get(client: KubeClient, path: str, type_: type[_T]) -> _T | None:
    try:
        return _decode(await client.request("GET", path), type_)
    except KubeNotFound:
        return None


async def get_pod(client: KubeClient, namespace: str, name: str) -> Pod | None:
    """The pod ``namespace/name``, or ``None`` if it does not exist."""
    return await _get(client, pod_path(namespace, name), Pod)


async def get_secret(client: KubeClient, namespace: str, name: str) -> Secret | None:
    """The Secret (values still base64), or ``None`` if it does not exist."""
    return await _get(client, f"/api/v1/namespaces/{namespace}/secrets/{name}", Secret)


async def get_config_map(client: KubeClient, namespace: str, name: str) -> ConfigMap | None:
    """The ConfigMap, or ``None`` if it does not exist."""
    return await _get(client, f"/api/v1/namespaces/{namespace}/configmaps/{name}", ConfigMap)


class KubeObjects:
    """Secrets and ConfigMaps a pod references, read on demand (RBAC: get only, no informer)."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def secret(self, namespace: str, name: str) -> Secret | None:
        return await get_secret(self._kube, namespace, name)

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        return await get_config_map(self._kube, namespace, name)
