"""One attempt at running a pod on the virtual node, over a ``Provider``: the kubelet's rules.

``supervise_pod`` (``vk_trio.node.supervisor``) runs a ``PodLifecycle`` inside the pod's cancel
scope and starts it again if it raises. This module holds the kubelet's rules and nothing of
the backend: phases that never go back, ``restartPolicy``, CrashLoopBackOff with its reset
after a long healthy run, the count of failed machines that blames the container, probes.

The lifecycle, one instance per turn of the loop::

    check ─► adopt an instance rented earlier, or acquire one ─► follow its observations
      (Booting ─► Running with address ─► Exited / MachineFailed / Lost) ─► release it
      ─► restartPolicy: acquire a new one (restartCount+1, backoff), or end Succeeded/Failed

A pod with ``activeDeadlineSeconds`` fails (``DeadlineExceeded``) once that long has passed
since its ``startTime``, whatever it is doing (searching offers, booting, running, backing off):
its instance is destroyed at once, as the kubelet's ``activeDeadlineHandler`` kills the pod. The
deadline is read again from every newer copy of the pod (the API server lets it shrink).

An instance taken away for a while (``Interrupted``: outbid) turns the pod not Ready with the
``DisruptionTarget`` condition; it comes back (Running), ends as any instance does, or is
given up on (``Preempted``): released, and a new one bought at once (restartCount+1, no
backoff, whatever restartPolicy: the container did not fail).
"""

from __future__ import annotations

import datetime as dt
import math
from contextlib import aclosing
from dataclasses import replace

import trio

from vk_trio import metrics
from vk_trio.errors import VkError, describe_error
from vk_trio.kube.models import Container, ObjectMeta, Pod
from vk_trio.node.admission import unsupported_reason
from vk_trio.node.handle import PodHandle
from vk_trio.node.probes import Kill, gates, probed, run_probes, unsupported
from vk_trio.node.provider import (
    Booting,
    Exited,
    Interrupted,
    InvalidPod,
    Lost,
    MachineFailed,
    Observation,
    Preempted,
    Processes,
    Running,
)
from vk_trio.node.reporter import PodReporter
from vk_trio.node.services import NodeServices
from vk_trio.node.status import (
    DISRUPTION_TARGET,
    Disruption,
    Phase,
    PodView,
    Terminated,
    Waiting,
    now_rfc3339,
)
from vk_trio.node.status import Running as RunningState
from vk_trio.retry import ANY_FAILURE, pod_backoff, retry_until_done

__all__ = ["PodLifecycle"]

DEADLINE_EXCEEDED = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
"""The kubelet's reason and message (``pkg/kubelet/active_deadline.go``), on the pod's status
and on its Normal Event."""

UNKNOWN_EXIT = 137
"""The exit code shown when the backend does not say how the container ended; as the
kubelet's ``ContainerStatusUnknown``, it is never read as success."""


def _spec_seen(handle: PodHandle) -> tuple[int, tuple[str, ...]]:
    """What of the pod's spec its status shows: the generation, the ephemeral containers
    (counted apart: a server before 1.33 keeps no generation)."""
    pod = handle.pod
    return pod.metadata.generation, tuple(c.name for c in pod.spec.ephemeral_containers)


class PodLifecycle:
    """One attempt at running a pod; ``supervise_pod`` restarts it if it crashes."""

    def __init__(self, services: NodeServices, handle: PodHandle) -> None:
        self.s = services
        self.provider = services.provider
        self.handle = handle
        pod = handle.pod
        first = pod.spec.containers[0].name if pod.spec.containers else ""
        self.report = PodReporter(
            services.kube, services.events, services.statuses, handle, chosen=first
        )
        self.log = self.report.log
        self._runtime = False
        """The placement's ``runtime``: processes are reported by the instance's runtime."""
        self._final = False
        """The runtime finished the pod: its outcome is final, whatever ``restartPolicy``."""

    @property
    def view(self) -> PodView:
        return self.report.view

    async def show(self, view: PodView) -> None:
        await self.report.show(view)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._show_spec_changes)
            with trio.CancelScope() as running:
                if not self.handle.pod.is_terminal:
                    nursery.start_soon(self._deadline, running)
                await self._run()
            if running.cancelled_caught:
                await self._deadline_exceeded()
            nursery.cancel_scope.cancel()

    async def _deadline(self, running: trio.CancelScope) -> None:
        """``activeDeadlineSeconds``: cancel ``running`` once it has passed since the pod's
        ``startTime``, read again from each newer copy of the pod.

        The age is read from the wall clock once, then counted on Trio's clock (an
        update that shrinks the deadline is measured from the same start)."""
        started = trio.current_time() - _age(self.view.start_time)
        while True:
            seen = self.handle.version
            seconds = self.handle.pod.spec.active_deadline_seconds
            deadline = math.inf if seconds is None else started + seconds
            with trio.CancelScope(deadline=deadline) as waiting:
                await self.handle.wait_updated(seen)
            if waiting.cancelled_caught:
                running.cancel()
                return

    async def _deadline_exceeded(self) -> None:
        """The pod failed its deadline: say so as the kubelet does, then destroy what bills."""
        await self.report.event("Normal", DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
        if isinstance(self.view.state, RunningState):
            killed = Terminated(UNKNOWN_EXIT, "Error")
        else:  # never started: what the kubelet shows for a container of a terminated pod
            killed = Terminated(
                UNKNOWN_EXIT,
                "ContainerStatusUnknown",
                "The container could not be located when the pod was terminated",
            )
        await self.show(
            replace(
                self.view,
                phase="Failed",
                state=self._dated(killed),
                ready=False,
                reason=DEADLINE_EXCEEDED,
                message=DEADLINE_MESSAGE,
            )
        )
        await self._release()

    async def _show_spec_changes(self) -> None:
        """Show the status again when the pod's spec changes: ``kubectl debug`` adds an
        ephemeral container (its status, it cannot run, ends kubectl's wait for it), or any
        edit bumps ``metadata.generation`` (``observedGeneration`` says the node saw it)."""
        shown = _spec_seen(self.handle)
        while True:
            await self.handle.wait_updated(self.handle.version)
            if self.handle.pod.is_deleting:
                return  # the teardown follows: the delete's own generation is not shown
            if _spec_seen(self.handle) != shown:
                shown = _spec_seen(self.handle)
                await self.report.refresh()

    async def _run(self) -> None:
        if self.handle.pod.is_terminal:  # finished earlier: only make sure nothing still bills
            await self._release()
            return
        unsupported = unsupported_reason(self.handle.pod)
        if unsupported is not None:
            await self._refuse(unsupported)
            return
        await self._check()
        self._restore()
        await self._ignored_probes()
        adopted = await self.provider.adopt(self.handle.pod, self.report)
        if isinstance(adopted, Lost):
            await self._instances(None, Terminated(UNKNOWN_EXIT, adopted.reason, adopted.message))
        else:
            await self._instances(adopted, None)

    async def _instances(self, instance: str | None, outcome: Terminated | None) -> None:
        """Run the pod on one instance after another (``instance`` first, if adopted; or
        ``outcome`` first, how the adopted one ended) until ``restartPolicy`` says it ends."""
        settings = self.s.settings
        crash = pod_backoff(settings).delays()
        ended: Terminated | MachineFailed | Preempted | None = outcome
        machine_failures = 0
        while True:
            if ended is None:
                if instance is None:
                    instance = await self.provider.acquire(self.handle.pod, self.report)
                followed_from = trio.current_time()
                ended = await self._follow(instance)
                await self._release()
                instance = None
                if trio.current_time() - followed_from > settings.backoff_reset:
                    crash.reset()  # a long healthy run: the next exit is not a crash loop
            if isinstance(ended, Preempted):
                await self._replacing(ended)
                ended = None
                continue
            if isinstance(ended, MachineFailed):
                machine_failures += 1
                if machine_failures < settings.machine_failures:
                    ended = None
                    continue
                ended = Terminated(
                    128,
                    "StartError",
                    f"{ended.message} (the instance failed on {machine_failures} machines)",
                )
            machine_failures = 0
            ended = self._dated(ended)
            if self._final or not self._restarts(ended):
                await self._finish(ended)
                return
            await self._back_off(ended, crash.next())
            ended = None

    async def _back_off(self, outcome: Terminated, delay: float) -> None:
        """CrashLoopBackOff: say why and for how long, then wait before the next instance."""
        await self.report.event(
            "Warning",
            "BackOff",
            f"container {outcome.reason.lower()} (exit {outcome.exit_code}); "
            f"buying a new instance in {delay:.0f}s",
            container=self.report.chosen,
        )
        await self.show(
            replace(
                self.view,
                state=Waiting("CrashLoopBackOff", f"back-off {delay:.0f}s restarting"),
                ready=False,
                restart_count=self.view.restart_count + 1,
                last_state=outcome,
                address=None,
            )
        )
        await trio.sleep(delay)

    async def _replacing(self, preempted: Preempted) -> None:
        """The instance was taken for good: count the restart and buy a new one at once."""
        await self.show(
            replace(
                self.view,
                state=Waiting("SearchingOffers", f"replacing the instance: {preempted.message}"),
                ready=False,
                restart_count=self.view.restart_count + 1,
                last_state=self._dated(
                    Terminated(UNKNOWN_EXIT, preempted.reason, preempted.message)
                ),
                address=None,
            )
        )

    def _restore(self) -> None:
        """Start from what an earlier run (maybe another process) showed: a pod whose
        container was running keeps its state and address while its instance is re-observed,
        instead of falling back to "searching" with no IP."""
        pod = self.handle.pod
        previous = next(
            (c for c in pod.status.container_statuses if c.name == self.report.chosen), None
        )
        was_running = previous.state.running if previous else None
        self.report.view = replace(
            self.view,
            phase="Running" if pod.status.phase == "Running" else "Pending",
            state=RunningState(was_running.started_at or now_rfc3339())
            if was_running
            else self.view.state,
            address=pod.status.pod_ip if was_running else None,
            restart_count=previous.restart_count if previous else 0,
            disruption=_shown_disruption(pod),
        )

    def _dated(self, outcome: Terminated) -> Terminated:
        """``outcome`` with its start and finish times: when the container started running,
        or (never started) when it gave up, so ``kubectl describe`` never shows year 1."""
        now = now_rfc3339()
        state = self.view.state
        started = state.started_at if isinstance(state, RunningState) else now
        return replace(
            outcome,
            started_at=outcome.started_at or started,
            finished_at=outcome.finished_at or now,
        )

    async def _finish(self, outcome: Terminated) -> None:
        phase: Phase = "Succeeded" if outcome.exit_code == 0 else "Failed"
        await self.show(
            replace(
                self.view,
                phase=phase,
                state=outcome,
                ready=False,
                reason=None if phase == "Succeeded" else outcome.reason,
                message=outcome.message or None,
            )
        )

    async def _refuse(self, message: str) -> None:
        """The pod stays Pending (a failed one would be re-created at once) and says why."""
        await self.report.event("Warning", "NotSupportedOnVirtualNode", message)
        await self.show(self.view.waiting("NotSupportedOnVirtualNode", message))

    def _restarts(self, outcome: Terminated) -> bool:
        policy = self.handle.pod.spec.restart_policy
        if policy == "Never":
            return False
        if policy == "OnFailure":
            return outcome.exit_code != 0
        return True

    async def _check(self) -> None:
        """Ask the provider where the pod runs; while it cannot, say why once and wait for
        the pod to be edited."""
        shown: str | None = None
        while True:
            pod, seen = self.handle.pod, self.handle.version
            try:
                placement = self.provider.check(pod)
            except InvalidPod as exc:
                if str(exc) != shown:
                    shown = str(exc)
                    await self.report.event("Warning", exc.reason, shown)
                    await self.show(self.view.waiting(exc.reason, shown))
            else:
                self.handle.placement = placement
                self.report.chosen = placement.container
                self._runtime = placement.runtime
                self.report.view = replace(
                    self.view,
                    skipped=dict(placement.skipped),
                    initialized=self.view.initialized and not pod.spec.init_containers,
                )
                return
            await self.handle.wait_updated(seen)

    async def _release(self) -> None:
        """Release the pod's instances while the pod lives on (a restart, a terminal phase),
        retrying until the provider verifies it; every failure is said on the pod."""

        async def said(exc: Exception, _: float) -> None:
            await self.report.event(
                "Warning",
                "DestroyFailed",
                f"could not destroy the instance yet, retrying: {describe_error(exc)}",
            )

        await retry_until_done(
            lambda: self.provider.release(self.handle.pod),
            schedule=pod_backoff(self.s.settings),
            on=ANY_FAILURE,
            on_retry=said,
        )

    # -- following one instance ----------------------------------------------------------

    async def _follow(self, instance: str) -> Terminated | MachineFailed | Preempted:
        """Show the instance's observations until it ends, and probe the container while it
        runs; return how it ended (or how the probes killed it)."""
        async with trio.open_nursery() as nursery:
            try:
                return await self._observe(instance, nursery)
            finally:
                nursery.cancel_scope.cancel()  # the probes end with the instance

    async def _observe(
        self, instance: str, nursery: trio.Nursery
    ) -> Terminated | MachineFailed | Preempted:
        observations = self.provider.follow(self.handle.pod, instance, self.report)
        probing = _Probing(nursery)
        with trio.CancelScope() as probing.following:
            async with aclosing(observations):
                async for observed in observations:
                    ended = await self._observed(observed, probing)
                    if ended is not None:
                        return ended
                    if isinstance(observed, Running) and self._runtime and not probing.runtime:
                        probing.runtime = True
                        nursery.start_soon(self._processes, instance, probing)
        if probing.finished is not None:
            self._final = probing.finished[1]
            return probing.finished[0]
        if probing.killed:
            kill = probing.killed[0]
            await self.report.event(
                "Normal",
                "Killing",
                f"Container {self.report.chosen} failed {kill.kind.lower()} probe, "
                "will be restarted",
                container=self.report.chosen,
            )
            return Terminated(UNKNOWN_EXIT, "Error", kill.message)
        raise RuntimeError(f"provider stopped following instance {instance} before it ended")

    async def _observed(
        self, observed: Observation, probing: _Probing
    ) -> Terminated | MachineFailed | Preempted | None:
        """Show one observation (and start or stop the probes); how the instance ended, if
        it did."""
        if not isinstance(observed, Running):
            # not serving (Vast rebooting it, say): the probes stop; a later Running, even
            # at the same endpoints, starts them again, their initial delays counted anew as
            # for a restarted container
            probing.stop()
        match observed:
            case Booting(message):
                if isinstance(self.view.state, RunningState):
                    await self.show(replace(self.view, ready=False, message=message))
                else:
                    await self.show(self.view.waiting("Provisioning", message))
            case Running():
                await self._serving(observed, probing)
            case Exited(code, message):
                return _terminated(code, message)
            case Interrupted():
                await self._interrupted(observed)
            case MachineFailed(reason, message) | Preempted(reason, message):
                await self.report.event("Warning", reason, message)
                return observed
            case Lost(reason, message):
                await self.report.event("Warning", reason, message)
                return Terminated(UNKNOWN_EXIT, reason, message)
        return None

    async def _serving(self, observed: Running, probing: _Probing) -> None:
        """The instance serves: show it, and (re)start the probes, unless nothing changed.
        With a runtime, the container's runs start the probes instead (``_processes``)."""
        if observed == probing.running:
            return  # the same again: the probes carry on
        if self._runtime:
            await self._instance_up(observed)
            probing.running = observed
            return
        await self._running(observed)
        await probing.restart(self, observed)

    async def _processes(self, instance: str, probing: _Probing) -> None:
        """Show what the instance's runtime reports of the pod's processes; the node's own
        probes (re)start with each run of the container, as a kubelet's do. A finished pod
        (or a process that ended for good) ends the instance's follow."""
        reports = self.provider.processes(self.handle.pod, instance, self.report)
        base: int | None = None
        started_at: str | None = None
        async with aclosing(reports):
            async for processes in reports:
                if base is None:  # restarts before this instance, and before a node restart
                    base = max(0, self.view.restart_count - processes.container.restart_count)
                for event in processes.events:  # the kubelet's, about one container
                    await self.report.event(
                        event.type,
                        event.reason,
                        event.message,
                        container=event.container,
                        init=event.init,
                    )
                await self._show_processes(processes, base)
                state = processes.container.state
                if isinstance(state, RunningState) and state.started_at != started_at:
                    started_at = state.started_at
                    if probing.running is not None:
                        await probing.restart(self, probing.running)
                if processes.finished:
                    probing.finished = (self._outcome(processes), True)
                    probing.following.cancel()
                    return

    def _outcome(self, processes: Processes) -> Terminated:
        """How a finished pod ended: its container's exit, or the runtime's reason (evicted)."""
        state = processes.container.state
        if processes.reason:
            return Terminated(UNKNOWN_EXIT, processes.reason, processes.message)
        if isinstance(state, Terminated):
            return state
        failed = next(
            (
                p.state
                for p in processes.init_containers
                if isinstance(p.state, Terminated) and p.state.exit_code != 0
            ),
            None,
        )
        return failed or Terminated(UNKNOWN_EXIT, "Error", processes.message)

    async def _show_processes(self, processes: Processes, base: int) -> None:
        """The runtime's report as the pod's status: the phase turns Running with the
        container's first run, and never goes back."""
        container = processes.container
        running = isinstance(container.state, RunningState)
        view = self.view
        if running and view.phase == "Pending":
            metrics.observe_bound_to_running(_seconds_since(self.handle.pod.metadata))
        node_container = self._container()
        if running and not isinstance(view.state, RunningState) and node_container is not None:
            gated_started, gated_ready = gates(node_container)
        else:
            gated_started, gated_ready = view.started, view.ready and running
        await self.show(
            replace(
                view,
                phase="Running" if running or view.phase == "Running" else view.phase,
                state=container.state,
                last_state=container.last_state or view.last_state,
                restart_count=base + container.restart_count,
                init_states=processes.init_containers,
                initialized=processes.initialized,
                ready=gated_ready,
                started=gated_started if container.started is None else container.started,
                runtime_ready=container.ready,
            )
        )

    async def _instance_up(self, observed: Running) -> None:
        """The instance serves; its runtime, not the instance, says when the container runs."""
        self._end_disruption()
        waiting = "PodInitializing" if self.handle.pod.spec.init_containers else "ContainerCreating"
        view = self.view
        if not isinstance(view.state, RunningState):
            view = view.waiting(waiting, "the instance runs; starting the pod's processes")
        await self._show_serving(view, observed)

    async def _show_serving(self, view: PodView, observed: Running) -> None:
        """``view`` at the instance's address, and the Event that says where it runs."""
        await self.show(
            replace(
                view,
                address=observed.address,
                message=None,
                reason=None,
                container_id=observed.container_id,
            )
        )
        await self.report.event(
            "Normal", "InstanceReady", observed.description, log_as="Instance ready"
        )

    def _end_disruption(self) -> None:
        disruption = self.view.disruption
        if disruption is not None and disruption.ended is None:
            self.report.view = replace(
                self.view, disruption=replace(disruption, ended=now_rfc3339())
            )

    async def _probe(
        self,
        container: Container,
        observed: Running,
        probing: _Probing,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Probe the running container; a kill ends the instance's follow, or, with a
        runtime inside the instance, restarts the process there (the probes start again
        with its next run)."""
        with trio.CancelScope() as scope:
            task_status.started(scope)
            kill = await run_probes(
                container, observed.endpoints, self.s.prober, _Probed(self), since=probing.since
            )
            if self._runtime and await self._restart_in_place(kill):
                return
            probing.killed.append(kill)
            probing.following.cancel()

    async def _restart_in_place(self, kill: Kill) -> bool:
        """Ask the runtime to restart the process; False when it cannot be reached (the
        instance is then replaced, as without a runtime)."""
        await self.report.event(
            "Normal",
            "Killing",
            f"Container {self.report.chosen} failed {kill.kind.lower()} probe, will be restarted",
            container=self.report.chosen,
        )
        try:
            await self.provider.restart(self.handle.pod, kill.message)
        except VkError as exc:
            self.log.warning("restart in place failed", error=describe_error(exc))
            return False
        return True

    def _container(self) -> Container | None:
        return next(
            (c for c in self.handle.pod.spec.containers if c.name == self.report.chosen), None
        )

    async def _ignored_probes(self) -> None:
        """Probes that cannot run (``exec``) are said on the pod, never silently dropped."""
        container = self._container()
        names = unsupported(container) if container is not None and not self._runtime else []
        if not names:
            self.report.view = replace(self.view, ignored_probes=None)
            return
        message = (
            f"container {self.report.chosen!r}: {', '.join(names)} cannot run on the virtual "
            "node (vk-trio probes the instance from outside: use httpGet, tcpSocket or grpc); "
            "ignored"
        )
        await self.report.event("Warning", "ProbeNotSupported", message)
        self.report.view = replace(self.view, ignored_probes=message)

    async def _interrupted(self, observed: Interrupted) -> None:
        """Not Ready, with ``DisruptionTarget`` since it stopped; said once per interruption."""
        shown = self.view.disruption
        if shown is None or shown.ended is not None or shown.since != observed.since:
            await self.report.event("Warning", observed.reason, observed.message)
        disruption = Disruption(observed.reason, observed.message, observed.since)
        await self.show(
            replace(self.view, ready=False, message=observed.message, disruption=disruption)
        )

    async def _running(self, observed: Running) -> None:
        self._end_disruption()
        state = self.view.state
        started = state.started_at if isinstance(state, RunningState) else now_rfc3339()
        if self.view.phase == "Pending":  # the pod's first start, not a restart
            metrics.observe_bound_to_running(_seconds_since(self.handle.pod.metadata))
        container = self._container()
        probed_started, ready = gates(container) if container is not None else (True, True)
        running = replace(
            self.view,
            phase="Running",
            state=RunningState(started),
            ready=ready,
            started=probed_started,
        )
        await self._show_serving(running, observed)


def _shown_disruption(pod: Pod) -> Disruption | None:
    """The disruption the pod shows (``DisruptionTarget`` True), kept with its time across a
    restart of the node: the pod says since when, whoever watches it now."""
    for condition in pod.status.conditions:
        if condition.type == DISRUPTION_TARGET and condition.status == "True":
            return Disruption(
                condition.reason or "",
                condition.message or "",
                condition.last_transition_time or now_rfc3339(),
            )
    return None


def _age(timestamp: str | None) -> float:
    """Seconds since ``timestamp`` (RFC 3339) on the wall clock; 0 for none."""
    if not timestamp:
        return 0.0
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (dt.datetime.now(dt.UTC) - then).total_seconds())


def _seconds_since(meta: ObjectMeta) -> float:
    """Seconds since the pod was created (bound, on this node: the scheduler binds at once)."""
    return _age(meta.creation_timestamp)


class _Probing:
    """The probes of the instance being followed: one task at a time, restarted by each new
    ``Running`` and stopped by anything else; a liveness kill lands in ``killed`` and
    cancels ``following`` (the follow of the instance)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.following = trio.CancelScope()
        self.killed: list[Kill] = []
        self.running: Running | None = None
        self.runtime = False
        """The runtime's reports are followed (one task per instance)."""
        self.finished: tuple[Terminated, bool] | None = None
        """The runtime ended the pod: its outcome, and that it is final."""
        self.since: float = 0.0
        """When the container first ran in this follow: initial delays count from it."""
        self._scope: trio.CancelScope | None = None

    def stop(self) -> None:
        self.running = None
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def restart(self, lifecycle: PodLifecycle, observed: Running) -> None:
        if self.running is None:
            self.since = trio.current_time()
        self.running = observed
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        container = lifecycle._container()
        if container is not None and probed(container):
            self._scope = await self.nursery.start(lifecycle._probe, container, observed, self)


class _Probed:
    """The ``ProbeReport`` of one pod: probe results become its status and Events."""

    def __init__(self, lifecycle: PodLifecycle) -> None:
        self._lifecycle = lifecycle

    async def probed(self, *, started: bool, ready: bool) -> None:
        view = self._lifecycle.view
        if isinstance(view.state, RunningState):
            await self._lifecycle.show(replace(view, started=started, ready=ready))

    async def unhealthy(self, message: str) -> None:
        await self._lifecycle.report.event("Warning", "Unhealthy", message)


def _terminated(code: int | None, message: str) -> Terminated:
    """How an exited container is shown: an unknown exit code is not success."""
    if code is None:
        detail = f": {message}" if message else ""
        return Terminated(
            UNKNOWN_EXIT, "ContainerStatusUnknown", f"the exit code was not reported{detail}"
        )
    return Terminated(code, "Completed" if code == 0 else "Error", message)
