"""The pod inside the instance: its volumes, its init containers in order, then its container.

One runner per agent, and one pod per runner: the first ``Start`` fixes the pod (a second
``Start`` for it changes nothing, one for another pod is refused), so that a node that
restarts and reconnects never restarts a process. Every change of any container is
published at once as a whole :class:`PodState` on the :class:`StateBoard`.

The runner also does what the kubelet does around the processes: it evicts the pod when an
``emptyDir`` outgrows its ``sizeLimit`` (the pod finishes, failed, reason ``Evicted``), and
stops the process within the pod's grace period when the agent itself is told to stop.
"""

from __future__ import annotations

from pathlib import Path

import trio
from loguru import logger

from vk_trio.agent.backoff import CrashBackoff
from vk_trio.agent.board import PodEvents, StateBoard
from vk_trio.agent.children import Children
from vk_trio.agent.container import Container, PodContext
from vk_trio.agent.logfiles import ContainerLogs
from vk_trio.agent.protocol import (
    Accepted,
    Bundle,
    ContainerState,
    Failed,
    PodState,
    ProcessSpec,
    Volume,
)
from vk_trio.agent.tracker import ContainerTracker
from vk_trio.agent.volumes import VolumeError, Volumes
from vk_trio.logs import redact

__all__ = ["NOT_STARTED", "Runner"]

NOT_STARTED = Failed(reason="NotStarted", message="the agent has not been given its pod yet")
_BEFORE_START = PodState(
    container=ContainerState(name="", state="waiting", reason="ContainerCreating")
)


class Runner:
    """The agent's one pod; :meth:`run` is the nursery that owns its tasks."""

    def __init__(
        self,
        volumes: Volumes,
        logs_dir: Path,
        *,
        children: Children | None = None,
        backoff_base: float = 10.0,
        eviction_interval: float = 10.0,
    ) -> None:
        self.volumes = volumes
        self.logs_dir = logs_dir
        self.children = children or Children()
        self.board = StateBoard(_BEFORE_START)
        self.events = PodEvents(self._publish)
        self.bundle: Bundle | None = None
        self._backoff_base = backoff_base
        self._eviction_interval = eviction_interval
        self._inits: list[Container] = []
        self._main: Container | None = None
        self._initialized = self._finished = False
        self._reason = self._message = ""
        self._stopping = False
        self._start_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pod's tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- requests ----------------------------------------------------------------------------

    async def start(self, bundle: Bundle) -> Accepted | Failed:
        for secret in bundle.secret_values:
            redact(secret)
        async with self._start_lock:
            if self.bundle is not None:
                if bundle.pod_uid == self.bundle.pod_uid:
                    return Accepted(started=False)
                return Failed(
                    reason="OtherPod",
                    message=f"the agent runs pod {self.bundle.pod_uid}, not {bundle.pod_uid}",
                )
            try:
                await self.volumes.make(bundle.volumes)
            except VolumeError as error:
                return Failed(reason="VolumeError", message=str(error))
            await self._prepare(bundle)
            assert self._nursery is not None, "Runner.run is not running"
            self._nursery.start_soon(self._pod)
            logger.info(f"pod {bundle.pod_uid} started")
            return Accepted(started=True)

    def restart(self, message: str) -> Accepted | Failed:
        if self._main is None:
            return NOT_STARTED
        self._main.restart(message)
        return Accepted()

    async def update_volume(self, volume: Volume) -> Accepted | Failed:
        if self.bundle is None:
            return NOT_STARTED
        try:
            await self.volumes.update(volume)
        except VolumeError as error:
            return Failed(reason="VolumeError", message=str(error))
        return Accepted()

    def logs(self, container: str) -> ContainerLogs | None:
        found = self.container(container)
        return None if found is None else found.logs

    def container(self, name: str) -> Container | None:
        """The pod's container (or init container) of that name (exec, attach, logs)."""
        for each in [*self._inits, *([self._main] if self._main else [])]:
            if each.spec.name == name:
                return each
        return None

    async def shutdown(self) -> None:
        """Stop the processes within the pod's grace period (the agent is stopping)."""
        if self.bundle is None:
            return
        self._stop_all("the agent is stopping")
        with trio.move_on_after(self.bundle.termination_grace + 5):
            await self._done.wait()

    async def stop(self, grace: float) -> Accepted | Failed:
        """The pod is being deleted: each process is stopped (its ``preStop`` hook first)
        within ``grace`` seconds, and nothing restarts; answered once all have ended (or
        a few seconds after the grace period, should one outlive its SIGKILL)."""
        if self.bundle is None:
            return NOT_STARTED
        logger.info(f"stopping the pod within {grace:g}s: it is being deleted")
        self._stop_all("", grace)
        with trio.move_on_after(max(grace, 0.0) + 5):
            await self._done.wait()
        return Accepted()

    # -- the pod -----------------------------------------------------------------------------

    async def _container(self, spec: ProcessSpec, pod: PodContext, *, init: bool) -> Container:
        directory = self.logs_dir / spec.name
        await trio.Path(directory).mkdir(parents=True, exist_ok=True)
        tracker = ContainerTracker(spec.name, self._publish)
        backoff = CrashBackoff(base=self._backoff_base)
        logs = ContainerLogs(directory, name=spec.name, pod=pod.pod_uid)
        return Container(spec, pod, tracker, logs, backoff, init=init)

    async def _prepare(self, bundle: Bundle) -> None:
        name = f"{bundle.pod_name}_{bundle.pod_namespace}({bundle.pod_uid})"
        pod = PodContext(
            bundle.pod_uid,
            bundle.restart_policy,
            bundle.termination_grace,
            self.volumes,
            self.children,
            name=name if bundle.pod_name else bundle.pod_uid,
            record=self.events.record,
        )
        self._inits = [await self._container(s, pod, init=True) for s in bundle.init_containers]
        self._main = await self._container(bundle.container, pod, init=False)
        self.bundle = bundle
        self._publish()

    async def _pod(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._evict_when_over_limit)
                await self._containers()
                self._finished = True  # before any checkpoint: no watcher sees it half done
                self._publish()
                nursery.cancel_scope.cancel()
            logger.info(f"pod finished {self._reason}".rstrip())
        finally:
            self._finished = True
            self._publish()
            self._done.set()

    async def _containers(self) -> None:
        assert self._main is not None
        for init in self._inits:
            if (await init.serve()).exit_code != 0 or self._stopping:
                return
        self._initialized = True
        self._main.tracker.waiting("ContainerCreating")
        await self._main.serve()

    async def _evict_when_over_limit(self) -> None:
        while True:
            await trio.sleep(self._eviction_interval)
            over = await trio.to_thread.run_sync(self.volumes.over_limit)
            if over:
                self._reason, self._message = "Evicted", "; ".join(over)
                logger.info(f"evicting the pod: {self._message}")
                self._stop_all(self._message)
                return

    def _stop_all(self, message: str, grace: float | None = None) -> None:
        self._stopping = True
        for container in [*self._inits, *([self._main] if self._main else [])]:
            container.stop(message, grace)

    def _publish(self) -> None:
        if self._main is None:
            return
        self.board.publish(
            PodState(
                init_containers=[init.tracker.snapshot() for init in self._inits],
                container=self._main.tracker.snapshot(),
                initialized=self._initialized,
                finished=self._finished,
                reason=self._reason,
                message=self._message,
                events=self.events.recent,
            )
        )
