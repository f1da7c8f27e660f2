"""Route pod watch events to one supervisor per pod UID; own the nursery they all run in.

Events for one pod are handled by that pod's task alone, in order (kopf's rule: concurrent
handling of one object's events damages data). The dispatcher never waits on a pod task: it
hands over the newest pod object and returns, so one slow pod cannot delay another's events.

A pod already known is never started twice, whatever the watch replays (a relist after 410
sends ADDED for every pod again). A pod that is deleted (``deletionTimestamp``) or vanishes
(DELETED, or missing from a relist, which the watch turns into DELETED) gets its run scope
cancelled; its supervisor then tears down and ends, and only then is the UID forgotten.
(``spec.nodeName`` never changes once set, and the watch selects this node's pods, so a pod
cannot "move off" the node.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import trio
from loguru import logger

from vk_trio.kube.watch import PodEvent
from vk_trio.node.handle import PodHandle
from vk_trio.node.services import NodeServices
from vk_trio.node.supervisor import supervise_pod


class Dispatcher:
    """Owns the pods nursery; ``handles`` maps each live pod UID to its task's handle."""

    def __init__(
        self, services: NodeServices, *, observer: Callable[[PodEvent], None] | None = None
    ) -> None:
        self._services = services
        self._observer = observer
        """Told every event first (the EndpointSlice controller); must not block."""
        self.handles: dict[str, PodHandle] = {}
        self._synced = trio.Event()

    @property
    def synced(self) -> bool:
        """True once the first list of this node's pods has been dispatched."""
        return self._synced.is_set()

    def phase_counts(self) -> Counter[tuple[str, str]]:
        """(phase, waiting reason or "") → this node's pods in it, for /metrics."""
        counts: Counter[tuple[str, str]] = Counter()
        for handle in self.handles.values():
            status = handle.pod.status
            waiting = next(
                (c.state.waiting.reason for c in status.container_statuses if c.state.waiting),
                "",
            )
            counts[(status.phase or "Pending", waiting or "")] += 1
        return counts

    async def wait_synced(self) -> None:
        """Return once the first list of this node's pods has been dispatched."""
        await self._synced.wait()

    async def run(
        self,
        events: AsyncGenerator[PodEvent, None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Dispatch ``events`` until they end or this task is cancelled.

        Owns the nursery of every pod supervisor and of the status writer they share: when
        this returns (process shutdown), all pod tasks have ended without destroying
        anything, as the supervisor documents.
        """
        async with trio.open_nursery() as pods, aclosing(events):
            await pods.start(self._services.statuses.run)
            task_status.started()
            async for event in events:
                self._dispatch(event, pods)

    def _dispatch(self, event: PodEvent, pods: trio.Nursery) -> None:
        if self._observer is not None:
            self._observer(event)
        if event.type == "SYNCED":
            if not self.synced:
                logger.info("pod watch synced", pods=len(self.handles))
            self._synced.set()
            return
        pod = event.pod
        if pod is None:
            return
        handle = self.handles.get(pod.uid)
        if event.type == "DELETED":
            if handle is not None:
                handle.stop(gone=True)
            return
        if handle is not None:
            handle.update(pod)
            return
        handle = PodHandle(pod)
        self.handles[pod.uid] = handle
        logger.info("pod added", pod=pod.key, uid=pod.uid)
        pods.start_soon(self._supervise, handle, name=f"pod {pod.key}")
        if pod.is_deleting:
            handle.stop()

    async def _supervise(self, handle: PodHandle) -> None:
        try:
            await supervise_pod(self._services, handle)
        finally:
            if self.handles.get(handle.uid) is handle:
                del self.handles[handle.uid]
