"""Which pod and container a kubelet API request means, or the kubelet's answer when none.

The kubelet API names a pod by namespace and name and a container by name. The node knows its
pods (the dispatcher's handles) and, once the provider has checked a pod, which container its
instance runs (``PodHandle.placement``). ``PodLookup`` turns a request into that pod, or into
the answer the real kubelet gives: 404 for a pod or container it does not have, 400 "waiting
to start" for a container that does not run (the provider skipped it, or has not placed the
pod yet), and 400 for an ephemeral container (``kubectl debug``), which no instance can add.
So a provider is only ever asked about the container it runs.

``streaming`` is the same for ``exec``, ``attach`` and ``port-forward``, which also name the
pod's UID when the caller knows it (404 when it is another pod of the same name) and are
refused at once (``NotSupported``) when the provider's ``Placement`` says they cannot reach
the container.
"""

from __future__ import annotations

from collections.abc import Mapping

from vk_trio.kube.models import Pod
from vk_trio.node.handle import PodHandle
from vk_trio.node.provider import NotFound, NotReady, NotSupported

__all__ = ["PodLookup"]


class PodLookup:
    """This node's pods and where their containers run, as the kubelet API reads them."""

    def __init__(self, handles: Mapping[str, PodHandle], *, node_name: str) -> None:
        self._handles = handles
        self._node = node_name

    def pods(self) -> list[Pod]:
        """This node's pods, as the node last saw them (``GET /pods``)."""
        return [handle.pod for handle in self._handles.values()]

    def placed(self) -> list[tuple[Pod, str]]:
        """Each pod the provider has placed, with the container its instance runs."""
        return [
            (handle.pod, handle.placement.container)
            for handle in self._handles.values()
            if handle.placement is not None
        ]

    def streaming(
        self, namespace: str, name: str, container: str | None, uid: str | None = None
    ) -> tuple[Pod, str]:
        """The pod and the container a stream means (``container`` None: the one its
        instance runs, for port-forward), or the kubelet's answer."""
        handle = self._handle(namespace, name)
        if uid and handle.pod.uid != uid:
            raise NotFound(f"pod {namespace}/{name} with uid {uid} is not on node {self._node}")
        placement = handle.placement
        if container is None:
            container = placement.container if placement else handle.pod.spec.containers[0].name
        pod = self.running(namespace, name, container)
        if placement is not None and placement.streams_refused:
            raise NotSupported(placement.streams_refused)
        return pod, container

    def _handle(self, namespace: str, name: str) -> PodHandle:
        handle = next(
            (
                h
                for h in self._handles.values()
                if h.pod.metadata.namespace == namespace and h.pod.metadata.name == name
            ),
            None,
        )
        if handle is None:
            raise NotFound(f"pod {namespace}/{name} is not on node {self._node}")
        return handle

    def running(self, namespace: str, name: str, container: str) -> Pod:
        """The pod whose instance runs ``container``; ``NotFound`` or ``NotReady`` (with the
        kubelet's wording) when there is none."""
        handle = self._handle(namespace, name)
        pod = handle.pod
        if container in {c.name for c in pod.spec.ephemeral_containers}:
            raise NotReady(
                "kubectl debug is not supported on Vast.ai instances (yet): ephemeral "
                f"container {container} does not run"
            )
        if container not in {c.name for c in pod.spec.containers}:
            raise NotFound(f"container {container} is not valid for pod {name}")
        placement = handle.placement
        if placement is not None and placement.container == container:
            return pod
        if placement is not None:
            why = placement.skipped.get(container, f'the instance runs "{placement.container}"')
        else:
            why = _waiting(pod, container)
        raise NotReady(f'container "{container}" in pod "{name}" is waiting to start: {why}')


def _waiting(pod: Pod, container: str) -> str:
    """What the container's status says it waits for (before the provider placed it)."""
    for status in pod.status.container_statuses:
        waiting = status.state.waiting
        if status.name == container and waiting is not None and waiting.reason:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    return "ContainerCreating"
