"""The dispatcher's grip on one pod's task: the newest pod object and its cancel scope."""

from __future__ import annotations

import trio

from vk_trio.kube.models import Pod
from vk_trio.node.provider import Placement

__all__ = ["PodHandle"]


class PodHandle:
    """Created by the dispatcher when a pod is first seen; the pod's supervisor reads it.

    ``run_scope`` is the pod's lifecycle: deleting the pod cancels it, and only then does the
    supervisor tear down. ``update`` hands the task newer copies of the pod without waiting
    on it, so one slow pod never delays another's events.
    """

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.uid = pod.uid
        self.run_scope = trio.CancelScope()
        self.gone = False
        """The pod object no longer exists in the API (DELETED), so nothing to delete."""
        self.placement: Placement | None = None
        """Where the provider runs the pod's containers, once it has checked the pod: what
        the kubelet API follows to answer for a container (``vk_trio.node.lookup``)."""
        self.version = 0
        """Bumped by every ``update``, so a waiter cannot miss one that came meanwhile."""
        self._updated = trio.Event()

    def update(self, pod: Pod) -> None:
        """Hand the task a newer copy of the pod; deletion cancels the task's run scope."""
        self.pod = pod
        self.version += 1
        updated, self._updated = self._updated, trio.Event()
        updated.set()
        if pod.is_deleting:
            self.stop()

    def stop(self, *, gone: bool = False) -> None:
        """The pod is being deleted (idempotent): end the lifecycle, then tear down."""
        self.gone = self.gone or gone
        self.run_scope.cancel()

    async def wait_updated(self, since: int) -> Pod:
        """The pod, once it is newer than ``version`` was at ``since``."""
        while self.version == since:
            await self._updated.wait()
        return self.pod
