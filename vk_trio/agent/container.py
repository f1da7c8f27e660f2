"""One container of the pod, run after run under the pod's restart policy.

Around each run, what the kubelet does around a container: the termination-message file is
made empty before the process starts (writable by anyone, as the kubelet's bind-mounted
file is) and read when it ends (at most 4 KiB; with ``FallbackToLogsOnError`` and a failed
run, the last 80 lines or 2 KiB of its log when the file is empty), as the terminated
state's ``message``. The ``postStart`` hook runs right after the process starts, and the
container is reported running only once it returned; a failing one kills the run
(``FailedPostStartHook``). The ``preStop`` hook runs before every stop signal
(``process.Run``). Each step is recorded for the node's Events (``Created``, ``Started``,
``Killing``, ``BackOff``, the hooks' failures), with the kubelet's wording.

A run that ends is restarted as the kubelet restarts it: an init container until it
succeeds (unless the policy is ``Never``), the pod's container on any exit (``Always``) or
a failing one (``OnFailure``), after the kubelet's crash back-off, while the status shows
``CrashLoopBackOff`` with the kubelet's message. A process that cannot start (no such
program, a user the agent cannot be, a mount that failed) is a run too: it ends at once
with ``StartError`` and exit code 128, and is retried the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import msgspec
import trio
from loguru import logger

from vk_trio.agent.attach import RunStdio
from vk_trio.agent.backoff import CrashBackoff, go_duration
from vk_trio.agent.children import Children
from vk_trio.agent.hooks import run_hook
from vk_trio.agent.launch import Launch, LaunchError, prepare
from vk_trio.agent.logfiles import ContainerLogs
from vk_trio.agent.probes import Probes
from vk_trio.agent.process import Run, run_process, spawn
from vk_trio.agent.protocol import Logs, ProcessSpec, Terminated
from vk_trio.agent.tracker import ContainerTracker, rfc3339_now
from vk_trio.agent.volumes import VolumeError, Volumes

__all__ = ["Container", "PodContext"]

Policy = Literal["Always", "OnFailure", "Never"]
Record = Callable[[str, bool, Literal["Normal", "Warning"], str, str], None]
"""Records an event: container, init, type, reason, message (``board.PodEvents.record``)."""

MESSAGE_MAX = 4096
"""The kubelet's ``maxContainerTerminationMessageLength``: bytes read from the file."""
LOG_MESSAGE_LINES = 80
LOG_MESSAGE_MAX = 2048
"""``MaxContainerTerminationMessageLogLines`` and ``...LogLength``: the log's tail that
stands in for an empty file under ``FallbackToLogsOnError`` (the last bytes kept)."""


def _no_record(container: str, init: bool, kind: str, reason: str, message: str) -> None:
    """Events go nowhere (a container tested on its own)."""


@dataclass(frozen=True)
class PodContext:
    """What every container of the pod shares."""

    pod_uid: str
    policy: Policy
    grace: float
    volumes: Volumes
    children: Children
    name: str = ""
    """The pod as the kubelet's messages name it: ``name_namespace(uid)``."""
    record: Record = _no_record


def _make_message_file(path: str) -> None:
    """An empty file at ``path`` that the container's user can write (the kubelet makes one
    per run and bind-mounts it there)."""
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    with open(path, "wb"):
        pass
    os.chmod(path, 0o666)


def _read_message_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return file.read(MESSAGE_MAX).decode(errors="replace")
    except OSError:
        return ""


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

    def _event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self._pod.record(self.spec.name, self._init, kind, reason, message)

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
                self._event(
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {self.spec.name} in pod "
                    f"{self._pod.name or self._pod.pod_uid}",
                )
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

    def stop(self, message: str = "", grace: float | None = None) -> None:
        """End the container: the current run is stopped (within ``grace``, default the
        pod's) and none follows."""
        self._stopped = True
        self._waiting.cancel()
        if self._run is not None:
            self._event("Normal", "Killing", f"Stopping container {self.spec.name}")
            self._run.stop(self._pod.grace if grace is None else grace, message)

    async def _start(self) -> tuple[trio.Process, Launch] | Terminated:
        """The run's process, started; or how it failed to start."""
        try:
            if not self._mounted:
                await self._pod.volumes.mount(self.spec.mounts)
                self._mounted = True
            launch, executable = await prepare(self.spec)
            await self._message_file()
            stdin = subprocess.PIPE if self.spec.stdin else subprocess.DEVNULL
            process = await spawn(
                self.spec.argv, executable, launch, self._pod.children, stdin=stdin
            )
        except (LaunchError, VolumeError) as error:
            message = str(error)
        except OSError as error:
            message = f'exec: "{self.spec.argv[0]}": {(error.strerror or str(error)).lower()}'
        else:
            self._event("Normal", "Created", f"Created container: {self.spec.name}")
            self._event("Normal", "Started", f"Started container {self.spec.name}")
            return process, launch
        logger.info(f"container {self.spec.name} cannot start: {message}")
        self._event("Warning", "Failed", f"Error: {message}")
        return _start_error(message)

    async def _message_file(self) -> None:
        """The termination-message file, empty; a file system that refuses it is logged
        (the container still runs, as its message is only a courtesy)."""
        path = self.spec.termination_message_path
        if not path:
            return
        try:
            await trio.to_thread.run_sync(_make_message_file, path)
        except OSError as error:
            logger.warning(f"container {self.spec.name}: cannot make {path}: {error}")

    async def _with_message(self, terminated: Terminated) -> Terminated:
        """The run's end with the kubelet's termination message, when there is one."""
        path = self.spec.termination_message_path
        text = await trio.to_thread.run_sync(_read_message_file, path) if path else ""
        fallback = self.spec.termination_message_policy == "FallbackToLogsOnError"
        if not text and fallback and terminated.exit_code != 0:
            text = await self._log_tail()
        return msgspec.structs.replace(terminated, message=text) if text else terminated

    async def _log_tail(self) -> str:
        """The run's last lines as ``FallbackToLogsOnError`` reads them."""
        data = b""
        with contextlib.suppress(LookupError, ValueError, OSError):
            request = Logs(container=self.spec.name, tail_lines=LOG_MESSAGE_LINES)
            async with contextlib.aclosing(self.logs.read(request)) as chunks:
                async for chunk in chunks:
                    data = (data + chunk)[-LOG_MESSAGE_MAX:]
        return data.decode(errors="replace")

    async def _post_start(self, run: Run, launch: Launch) -> bool:
        """Run the ``postStart`` hook; False when it failed and the run is being killed."""
        hook = self.spec.post_start
        if hook is None:
            return True
        self.tracker.waiting("ContainerCreating")
        error = await run_hook(
            hook, launch, self._pod.children, container=self.spec.name, pod=self._pod.name
        )
        if error is None:
            return True
        logger.info(f"container {self.spec.name}: postStart hook failed: {error}")
        self._event("Warning", "FailedPostStartHook", error)
        self._event("Normal", "Killing", "FailedPostStartHook")
        run.stop(self._pod.grace, error)
        return False

    async def _pre_stop(self, launch: Launch) -> None:
        hook = self.spec.pre_stop
        assert hook is not None
        error = await run_hook(
            hook, launch, self._pod.children, container=self.spec.name, pod=self._pod.name
        )
        if error is not None:
            logger.info(f"container {self.spec.name}: preStop hook failed: {error}")
            self._event("Warning", "FailedPreStopHook", error)

    async def _run_once(self) -> tuple[Terminated, float]:
        started = await self._start()
        if isinstance(started, Terminated):
            return started, 0.0
        process, launch = started
        probes = Probes(self.spec.probes, launch, self._pod.children, self.tracker, self.restart)
        await self.logs.start_run()

        async def during(run: Run) -> None:
            self._run = run
            if self.spec.pre_stop is not None:
                run.before_stop = partial(self._pre_stop, launch)
            if not await self._post_start(run, launch):
                return
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
        return await self._with_message(terminated), ran_for
