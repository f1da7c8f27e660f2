"""One container of the pod, run after run under the pod's restart policy.

A run that ends is restarted as the kubelet restarts it: an init container until it
succeeds (unless the policy is ``Never``), the pod's container on any exit (``Always``) or
a failing one (``OnFailure``), after the kubelet's crash back-off, while the status shows
``CrashLoopBackOff`` with the kubelet's message. A process that cannot start (no such
program, a user the agent cannot be, a mount that failed) is a run too: it ends at once
with ``StartError`` and exit code 128, and is retried the same way.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Literal

import trio
from loguru import logger

from vk_trio.agent.attach import RunStdio
from vk_trio.agent.backoff import CrashBackoff, go_duration
from vk_trio.agent.children import Children
from vk_trio.agent.launch import LaunchError, prepare
from vk_trio.agent.logfiles import ContainerLogs
from vk_trio.agent.probes import Probes
from vk_trio.agent.process import Run, run_process, spawn
from vk_trio.agent.protocol import ProcessSpec, Terminated
from vk_trio.agent.tracker import ContainerTracker, rfc3339_now
from vk_trio.agent.volumes import VolumeError, Volumes

__all__ = ["Container", "PodContext"]

Policy = Literal["Always", "OnFailure", "Never"]


@dataclass(frozen=True)
class PodContext:
    """What every container of the pod shares."""

    pod_uid: str
    policy: Policy
    grace: float
    volumes: Volumes
    children: Children


def _start_error(message: str) -> Terminated:
    return Terminated(
        exit_code=128, reason="StartError", finished_at=rfc3339_now(), message=message
    )


class Container:
    """One container: its runs, its restarts, and the stop that ends them."""

    def __init__(
        self,
        spec: ProcessSpec,
        pod: PodContext,
        tracker: ContainerTracker,
        logs: ContainerLogs,
        backoff: CrashBackoff,
        *,
        init: bool,
    ) -> None:
        self.spec = spec
        self.tracker = tracker
        self.logs = logs
        self._pod = pod
        self._backoff = backoff
        self._init = init
        self._mounted = False
        self._run: Run | None = None
        self.stdio: RunStdio | None = None
        """The current run's stdio for ``kubectl attach``; None between runs."""
        self._stopped = False
        self._waiting = trio.CancelScope()

    def _restarts(self, terminated: Terminated) -> bool:
        if self._stopped or self._pod.policy == "Never":
            return False
        return terminated.exit_code != 0 or (not self._init and self._pod.policy == "Always")

    async def serve(self) -> Terminated:
        """Run until no run follows; the last run's end."""
        while True:
            terminated, ran_for = await self._run_once()
            final = not self._restarts(terminated)
            self.tracker.exited(terminated, final=final)
            if final:
                return terminated
            delay = self._backoff.delay(ran_for)
            if delay:
                message = (
                    f"back-off {go_duration(delay)} restarting failed container="
                    f"{self.spec.name} pod={self._pod.pod_uid}"
                )
                logger.info(message)
                self.tracker.waiting("CrashLoopBackOff", message)
                with trio.CancelScope() as self._waiting:
                    await trio.sleep(delay)
            if self._stopped:
                self.tracker.exited(terminated, final=True)
                return terminated
            self.tracker.restart_count += 1

    @property
    def running(self) -> bool:
        """A run is going (``kubectl exec`` and ``attach`` need one)."""
        return self.stdio is not None and not self.stdio.ended.is_set()

    def restart(self, message: str) -> None:
        """Kill the current run (the policy decides what follows); none running: nothing."""
        if self._run is not None:
            logger.info(f"restarting container {self.spec.name}: {message}")
            self._run.stop(self._pod.grace, message)

    def stop(self, message: str = "") -> None:
        """End the container: the current run is stopped and none follows."""
        self._stopped = True
        self._waiting.cancel()
        if self._run is not None:
            self._run.stop(self._pod.grace, message)

    async def _run_once(self) -> tuple[Terminated, float]:
        try:
            if not self._mounted:
                await self._pod.volumes.mount(self.spec.mounts)
                self._mounted = True
            launch, executable = await prepare(self.spec)
            stdin = subprocess.PIPE if self.spec.stdin else subprocess.DEVNULL
            process = await spawn(
                self.spec.argv, executable, launch, self._pod.children, stdin=stdin
            )
        except (LaunchError, VolumeError) as error:
            logger.info(f"container {self.spec.name} cannot start: {error}")
            return _start_error(str(error)), 0.0
        except OSError as error:
            message = f'exec: "{self.spec.argv[0]}": {(error.strerror or str(error)).lower()}'
            logger.info(f"container {self.spec.name} cannot start: {message}")
            return _start_error(message), 0.0
        probes = Probes(self.spec.probes, launch, self._pod.children, self.tracker, self.restart)
        await self.logs.start_run()

        async def during(run: Run) -> None:
            self._run = run
            ready, started = probes.initial()
            self.tracker.running(run.started_at, ready=ready, started=started)
            logger.info(f"container {self.spec.name} started (pid {run.process.pid})")
            if self._stopped:
                run.stop(self._pod.grace)
            await probes.run()

        self.stdio = stdio = RunStdio(process.stdin, stdin_once=self.spec.stdin_once)
        terminated: Terminated | None = None
        try:
            terminated, ran_for = await run_process(
                process, self._pod.children, self.logs, during, stdio
            )
        finally:
            self._run = None
            stdio.end(terminated)
            with trio.CancelScope(shield=True):
                await stdio.close_stdin()
                await self.logs.end_run()
        logger.info(
            f"container {self.spec.name} exited with code {terminated.exit_code}"
            f" ({terminated.reason})"
        )
        return terminated, ran_for
