"""One supervised task per pod on the virtual node: run its lifecycle, then tear it down.

``supervise_pod`` runs inside the dispatcher's pods nursery, inside the pod's own cancel scope
(``PodHandle.run_scope``). The dispatcher cancels that scope when the pod is deleted; then,
and only then, everything rented for the pod is released (each attempt retried until the
provider verifies it) and the pod object is removed with grace 0 and a UID precondition.

When the *process* stops instead (SIGTERM, a new leader), the outer cancellation passes
straight through: nothing is released, and the next process adopts each instance. All state
that must survive lives with the provider (its labels) and in Kubernetes (annotations,
``restartCount``), never only here.

What it retries: everything (the lifecycle, ``vk_trio.node.lifecycle``, is started again
along the pod backoff when it raises; a provider's own waits are reported through the
``Progress`` it is handed). What escalates: nothing; one pod's failure, even an unexpected
exception in teardown, never reaches the node.
"""

from __future__ import annotations

import trio
from loguru import logger

from vk_trio.errors import describe_error
from vk_trio.kube.models import Pod
from vk_trio.kube.pods import delete_pod
from vk_trio.node.handle import PodHandle
from vk_trio.node.lifecycle import PodLifecycle
from vk_trio.node.services import NodeServices
from vk_trio.retry import ANY_FAILURE, VK_FAILURES, log_retry, pod_backoff, retry_until_done

__all__ = ["supervise_pod"]


async def supervise_pod(services: NodeServices, handle: PodHandle) -> None:
    """Run one pod's lifecycle until the pod is deleted, then release what it rented.

    A lifecycle that raises anything (one pod's bug must never take the node down) is logged,
    said on the pod and started again along the pod backoff."""

    async def run() -> None:
        await PodLifecycle(services, handle).run()
        await trio.sleep_forever()  # terminal: nothing to do until the pod is deleted

    async def said(exc: Exception, delay: float) -> None:
        log = logger.bind(pod=handle.pod.key, uid=handle.uid)  # bound only when used
        log.opt(exception=exc).error("pod supervisor failed; restarting", retry_in=delay)
        await services.events.emit(
            handle.pod,
            type="Warning",
            reason="SupervisorError",
            # no delay in the text: identical messages aggregate into one Event
            message=f"internal error, retrying: {describe_error(exc)}",
        )

    with handle.run_scope:
        await retry_until_done(
            run, schedule=pod_backoff(services.settings), on=ANY_FAILURE, on_retry=said
        )
    await _teardown(services, handle)


STOP_MARGIN = 5.0
"""Seconds past the grace period the node waits for the runtime's answer to ``stop``: the
link's connection, and the last SIGKILL's reaping."""


def _grace(pod: Pod) -> float:
    """The deletion's grace period (``kubectl delete --grace-period``), else the pod's
    ``terminationGracePeriodSeconds``, else Kubernetes' default of 30 seconds."""
    seconds = pod.metadata.deletion_grace_period_seconds
    if seconds is None:
        seconds = pod.spec.termination_grace_period_seconds
    return 30.0 if seconds is None else float(seconds)


async def _stop_gracefully(services: NodeServices, handle: PodHandle) -> None:
    """Before the instance is destroyed, give a pod whose processes a runtime runs (the
    agent) the kubelet's graceful stop: each ``preStop`` hook (where a GPU job checkpoints),
    then SIGTERM, within the grace period. Bounded by that period, and never in the way of
    the destroy: a runtime that fails or does not answer in time is logged, and the release
    goes on (an instance left running bills)."""
    pod = handle.pod
    placement = handle.placement
    grace = _grace(pod)
    if placement is None or not placement.runtime or pod.is_terminal or grace <= 0:
        return
    log = logger.bind(pod=pod.key, uid=pod.uid)
    with trio.move_on_after(grace + STOP_MARGIN) as waited:
        try:
            await services.provider.stop(pod, grace)
        except Exception as exc:  # a provider's bug must not keep the instance billing
            log.warning("graceful stop failed; destroying anyway", error=describe_error(exc))
            return
    if waited.cancelled_caught:
        log.warning("graceful stop took longer than the grace period; destroying anyway")
    else:
        log.info("pod stopped gracefully", grace=grace)


async def _teardown(services: NodeServices, handle: PodHandle) -> None:
    """Release everything rented for the deleted pod, then remove the pod object.

    Every attempt is retried until it succeeds, whatever it raises (a bug in a provider must
    not leave a paid instance, nor take the node down). The waits between attempts are not
    shielded, so a stopping process leaves the pod Terminating for the next one to finish.
    """
    pod = handle.pod
    log = logger.bind(pod=pod.key, uid=pod.uid)
    backoff = pod_backoff(services.settings)

    async def said(exc: Exception, delay: float) -> None:
        log.warning("release failed; retrying", error=describe_error(exc), retry_in=delay)
        await services.events.emit(
            pod,
            type="Warning",
            reason="DestroyFailed",
            message=f"could not destroy the instance yet, retrying: {describe_error(exc)}",
        )

    await _stop_gracefully(services, handle)
    released = await retry_until_done(
        lambda: services.provider.release(pod), schedule=backoff, on=ANY_FAILURE, on_retry=said
    )
    if released:
        await services.events.emit(
            pod, type="Normal", reason="InstanceDestroyed", message="instance destroyed"
        )
    services.provider.forget(pod)
    if handle.gone:
        log.info("pod gone; instances destroyed", destroyed=released)
        return
    # Not shielded: the instance is gone, so a stopping process may leave the pod
    # Terminating; the next one sees the deletionTimestamp and finishes the delete.
    await retry_until_done(
        lambda: delete_pod(services.kube, pod),
        schedule=backoff,
        on=VK_FAILURES,
        on_retry=log_retry("pod delete failed; retrying", log=log),
    )
    log.info("pod deleted", destroyed=released)
