"""The Vast provider: ``vk_trio.node.provider.Provider`` over the Vast.ai API.

It owns everything Vast-specific a pod's life needs: annotations → requirements, the pod
spec → a create request, labels, buying (``buying.Buyer``), reading instances
(``observing.InstanceWatch`` fed by the node's one ``poller.InstancePoller``) and destroying
(``instances.destroy_all``), and what the kubelet API asks of a running container: its logs
(``logs.VastLogs``, over Vast's log upload) and usage (``usage``, from the poller's sweep).
Per pod it keeps only what a restart may lose: the machines that failed the pod (so another
is tried) and its log books, dropped by ``forget``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import trio
from loguru import logger

from vk_trio.annotations import AGENT, BUYING, ENDPOINTS, INSTANCE_ID
from vk_trio.config import Settings
from vk_trio.errors import PermanentError, TemporaryError, VkError
from vk_trio.kube.models import Pod
from vk_trio.node.provider import (
    AttachOptions,
    Ended,
    ExecOptions,
    Interrupted,
    InvalidPod,
    LogOptions,
    Lost,
    MachineFailed,
    NotSupported,
    Observation,
    Placement,
    Processes,
    ProcessIO,
    Progress,
    Running,
    Usage,
)
from vk_trio.node.status import DISRUPTION_TARGET
from vk_trio.provider.account import CostRecorder
from vk_trio.provider.agents import PodAgents, agent_failure
from vk_trio.provider.budget import Budget
from vk_trio.provider.buying import Buyer, CreditCheck
from vk_trio.provider.instances import destroy_all
from vk_trio.provider.labels import LabelOwner, instance_label
from vk_trio.provider.logs import VastLogs
from vk_trio.provider.market import OfferClaims, SharedSearches
from vk_trio.provider.namespace_budget import NamespaceHolds
from vk_trio.provider.observing import OUTBID_REASON, InstanceWatch
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.requirements import AnnotationError, Requirements, parse_requirements
from vk_trio.provider.runtime import (
    NO_AGENT,
    AgentDelivery,
    ImageConfigs,
    agent_placement,
    pod_bundle,
)
from vk_trio.provider.spec import ObjectLookup, SpecError, chosen_container, skipped_containers
from vk_trio.provider.usage import instance_usage
from vk_trio.retry import (
    LOST_CREATE_LOOKUP,
    LOST_CREATE_LOOKUPS,
    TRANSIENT,
    VK_FAILURES,
    pod_backoff,
    retry_until_done,
)
from vk_trio.vast import Instance, VastClient

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["VastProvider"]

RECHECK = 30.0
"""Seconds between re-checks of an instance's deadlines while no change arrives."""


@dataclass
class _PodMemory:
    excluded_machines: set[int] = field(default_factory=set)


class VastProvider:
    """Runs each pod of one node on one Vast instance at a time."""

    def __init__(
        self,
        *,
        settings: Settings,
        vast: VastClient,
        poller: InstancePoller,
        objects: ObjectLookup,
        budget: Budget,
        namespaces: NamespaceHolds,
        credit: CreditCheck = lambda price: None,
        costs: CostRecorder | None = None,
        agent: AgentDelivery | None = None,
        agent_missing: str = NO_AGENT,
        images: ImageConfigs | None = None,
    ) -> None:
        self._settings = settings
        self._agent = agent
        self._agent_missing = agent_missing
        """Why there is no agent (``agent_source``): the words of pods' refusals."""
        self._objects = objects
        self._agents = (
            PodAgents(agent, poller, objects, images) if agent is not None and images else None
        )
        self._vast = vast
        self._poller = poller
        self._budget = budget
        self._namespaces = namespaces
        self._costs = costs
        self._buyer = Buyer(
            settings=settings,
            vast=vast,
            poller=poller,
            searches=SharedSearches(vast),
            claims=OfferClaims(),
            budget=budget,
            namespaces=namespaces,
            objects=objects,
            credit=credit,
            agent_env=self._agent_env,
        )
        self._logs = VastLogs(vast, poller)
        self._backoff = pod_backoff(settings)
        self._pods: dict[str, _PodMemory] = {}

    # -- the Provider protocol ------------------------------------------------------------

    def check(self, pod: Pod) -> Placement:
        try:
            chosen = chosen_container(pod)
            _requirements(pod)
        except (AnnotationError, SpecError) as exc:
            raise InvalidPod("InvalidAnnotation", str(exc)) from exc
        runtime = agent_placement(pod, self._agent, missing=self._agent_missing)
        reason = f'the instance runs "{chosen.name}": one Vast instance, one image'
        skipped = {name: reason for name in skipped_containers(pod)}
        refused = "" if runtime else streams_refusal("kubectl exec, attach and port-forward need")
        return Placement(chosen.name, skipped, runtime=runtime, streams_refused=refused)

    async def adopt(self, pod: Pod, progress: Progress) -> str | Lost | None:
        """Waits for a sweep that started after this call, so an instance bought moments ago
        by a previous process is seen before anything new is bought; if that process died
        with a create in flight (``vast.ai/buying`` is still set), a few more sweeps are
        awaited, since a new instance can take a moment to be listed."""
        await self._fresh_sweep(progress)
        instances = self._poller.instances(pod.uid)
        buying = BUYING in progress.pod.metadata.annotations
        if not instances and buying:
            self._log(pod).warning("a buy was in flight when vk-trio stopped; looking for it")
            waits = LOST_CREATE_LOOKUP.delays()
            for _ in range(LOST_CREATE_LOOKUPS):
                await trio.sleep(waits.next())
                await self._fresh_sweep(progress)
                instances = self._poller.instances(pod.uid)
                if instances:
                    break
            try:
                await progress.annotate({BUYING: None})
            except VkError as exc:
                self._log(pod).warning("pod annotation patch failed", error=str(exc))
        if not instances:
            # A buy in flight that rented nothing came after the recorded instance was
            # released (a pod buys only once its last instance is gone): nothing was lost.
            if progress.pod.metadata.annotations.get(INSTANCE_ID) and not buying:
                return Lost("InstanceLost", "the instance vanished while vk-trio was away")
            return None
        keep = max(instances, key=lambda i: (i.actual_status == "running", i.id))
        if len(instances) > 1:
            self._log(pod).warning("several instances for one pod; keeping one", keep=keep.id)
            await self._release_until_done(pod, progress, keep=keep.id)
        self._log(pod).info("adopted instance", instance_id=keep.id, status=keep.actual_status)
        return str(keep.id)

    async def acquire(self, pod: Pod, progress: Progress) -> str:
        if self._agent_env(pod) is not None:
            await self._prepare(progress)
        memory = self._pods.setdefault(pod.uid, _PodMemory())
        instance_id = await self._buyer.acquire(
            pod,
            _requirements(pod),
            label=self._label(pod),
            excluded_machines=memory.excluded_machines,
            progress=progress,
        )
        return str(instance_id)

    def follow(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Observation, None]:
        """Observations of ``instance`` from the poller's sweeps, each reported once.

        Any *other* instance labelled for this pod (a create whose answer was lost and that
        was listed only after a second buy) is destroyed on sight: a pod never keeps two.
        The observing generator holds no copy of ``pod`` (``progress.pod`` is the newest):
        it lives as long as the instance, and a thousand stale copies add up.
        """
        requirements = _requirements(pod)
        meta = progress.pod.metadata
        owner = LabelOwner(meta.namespace, meta.name, meta.uid)
        self._poller.costs.seed(pod.uid, owner, meta.annotations)
        watch = InstanceWatch(
            int(instance),
            now=trio.current_time(),
            startup=requirements.startup_timeout or self._settings.startup_timeout,
            visibility_grace=self._settings.visibility_grace,
            offline_grace=self._settings.offline_grace,
            price_max=requirements.price_max,
            ran=_shows_running(progress.pod),
            on_outbid=requirements.on_outbid,
            outbid_grace=requirements.outbid_grace,
        )
        since = _outbid_since(progress.pod)
        if since is not None:
            watch.outbid_earlier(since, now=trio.current_time())
        return self._observe(pod.uid, watch, progress)

    async def _observe(
        self, uid: str, watch: InstanceWatch, progress: Progress
    ) -> AsyncGenerator[Observation, None]:
        instance_id = watch.instance_id
        last: Observation | None = None
        pull = _ImagePull(progress) if self._agent_env(progress.pod) is not None else None
        while True:
            version = self._poller.version(uid)
            listed = self._poller.instances(uid)
            if any(i.id != instance_id for i in listed):
                self._log(progress.pod).warning("a second instance for one pod; destroying it")
                await self._release_until_done(progress.pod, progress, keep=instance_id)
            current = next((i for i in listed if i.id == instance_id), None)
            looked = self._poller.looked_for(instance_id, since=watch.missing_from())
            observed = watch.observe(current, trio.current_time(), looked=looked)
            if observed is not None and self._agent_env(progress.pod) is not None:
                observed = await self._agent_failed(observed, progress)
            if isinstance(observed, Interrupted) and current is not None:
                await self._rebid(current, watch, progress)
            if observed is not None and observed != last:
                last = observed
                if pull is not None:
                    await pull.observed(current, observed)
                await self._record(instance_id, observed, watch, progress)
                yield observed
                if isinstance(observed, Ended):
                    return
            # Wake at the startup deadline and the end of an outbid grace too: a stuck boot
            # or a stopped instance changes nothing to wake us.
            with trio.move_on_after(watch.wake_in(trio.current_time(), RECHECK)):
                await self._poller.wait_changed(uid, version)

    async def release(self, pod: Pod, *, keep: str | None = None) -> int:
        destroyed = await destroy_all(
            self._vast,
            self._poller,
            pod.uid,
            http_timeout=self._settings.destroy_timeout,
            keep=None if keep is None else int(keep),
        )
        if keep is None:
            self._budget.release(pod.uid)
            await self._namespaces.release(pod)  # raises when it cannot: retried as a whole
            if self._costs is not None:
                await self._costs.final(pod)
        self._poller.hurry()
        return destroyed

    def forget(self, pod: Pod) -> None:
        self._pods.pop(pod.uid, None)
        if self._agents is not None:
            self._agents.forget(pod)
        self._logs.forget(pod.uid)
        self._poller.forget(pod.uid)
        self._poller.costs.forget(pod.uid)

    def processes(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Processes, None]:
        if self._agents is None:
            raise RuntimeError("processes() of a pod placed without the agent")
        return self._agents.follow(pod, instance, progress)

    async def restart(self, pod: Pod, message: str) -> None:
        if self._agents is None:
            raise RuntimeError("restart() of a pod placed without the agent")
        await self._agents.restart(pod, message)

    async def stop(self, pod: Pod, grace: float) -> None:
        if self._agents is not None and self._agent_env(pod) is not None:
            await self._agents.stop(pod, grace)

    async def logs(self, pod: Pod, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The agent's files for a pod it runs; else, and while its agent is not linked
        (still starting, or it could not start), what the instance printed: Vast's log,
        where the bootstrap says why it failed (no downloader, a wrong checksum)."""
        if self._agents is not None and self._agents.linked(pod):
            return await self._agents.logs(pod, container, options)
        return await self._logs.stream(pod, container, options)

    async def usage(self, pod: Pod) -> Usage | None:
        if self._agents is not None and self._agent_env(pod) is not None:
            return await self._agents.usage(pod)
        instances = self._poller.instances(pod.uid)
        return instance_usage(max(instances, key=lambda i: i.id)) if instances else None

    def exec(
        self, pod: Pod, container: str, options: ExecOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        return self._streaming(pod, "kubectl exec needs").exec(pod, container, options)

    def attach(
        self, pod: Pod, container: str, options: AttachOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        return self._streaming(pod, "kubectl attach needs").attach(pod, container, options)

    def port_forward(
        self, pod: Pod, port: int
    ) -> AbstractAsyncContextManager[trio.abc.HalfCloseableStream]:
        agents = self._streaming(pod, "kubectl port-forward needs")
        return agents.port_forward(pod, chosen_container(pod).name, port)

    # -- helpers --------------------------------------------------------------------------

    def _streaming(self, pod: Pod, what: str) -> PodAgents:
        """The agents, when ``pod`` runs under one: only an agent inside the instance can run
        a process there or reach its loopback (Vast offers no exec of its own)."""
        if self._agents is None or self._agent_env(pod) is None:
            raise NotSupported(streams_refusal(what))
        return self._agents

    def _agent_env(self, pod: Pod) -> dict[str, str] | None:
        """The bootstrap's variables when ``pod`` runs under the agent, else None."""
        try:
            runtime = self._agent is not None and agent_placement(pod, self._agent)
        except InvalidPod:
            return None
        return self._agent.env(pod) if runtime and self._agent is not None else None

    async def _agent_failed(self, observed: Observation, progress: Progress) -> Observation:
        """An instance that failed because the agent could not start says so, once."""
        failed = agent_failure(observed)
        if failed is None:
            return observed
        await progress.event("Warning", "AgentUnavailable", failed.message)
        return failed

    async def _prepare(self, progress: Progress) -> None:
        """Before buying for a pod under the agent: everything its bundle needs can be read
        (its ConfigMaps, Secrets, its image's config), so nothing is bought to wait on them."""
        waits = self._backoff.delays()
        while True:
            try:
                await pod_bundle(progress.pod, self._objects, self._images_or_fail())
                return
            except (TemporaryError, PermanentError) as exc:
                reason = getattr(exc, "reason", "CreateContainerConfigError")
                delay = waits.next()
                await progress.event("Warning", str(reason), str(exc))
                await progress.waiting(str(reason), f"{exc}; retrying in {delay:.0f}s")
                await trio.sleep(delay)

    def _images_or_fail(self) -> ImageConfigs:
        if self._agents is None:
            raise RuntimeError("a pod under the agent on a provider without image configs")
        return self._agents.images

    def _label(self, pod: Pod) -> str:
        meta = pod.metadata
        return instance_label(self._settings.node_name, meta.namespace, meta.name, meta.uid)

    def _log(self, pod: Pod) -> Logger:
        return logger.bind(pod=pod.key, uid=pod.uid)

    async def _record(
        self,
        instance_id: int,
        observed: Observation,
        watch: InstanceWatch,
        progress: Progress,
    ) -> None:
        """Keep the pod's own record in step: its endpoints while running, none after."""
        annotations: dict[str, str | None] | None = None
        if isinstance(observed, Running):
            annotations = {
                ENDPOINTS: msgspec.json.encode(dict(observed.endpoints)).decode(),
                INSTANCE_ID: str(instance_id),
            }
        elif isinstance(observed, Ended):
            annotations = {ENDPOINTS: None}
            if isinstance(observed, MachineFailed) and watch.machine_id is not None:
                memory = self._pods.setdefault(progress.pod.uid, _PodMemory())
                memory.excluded_machines.add(watch.machine_id)
        if annotations is not None:
            try:
                await progress.annotate(annotations)
            except VkError as exc:
                self._log(progress.pod).warning("pod annotation patch failed", error=str(exc))

    async def _rebid(self, instance: Instance, watch: InstanceWatch, progress: Progress) -> None:
        """``vast.ai/on-outbid: rebid``: raise the outbid instance's bid to what
        ``vast.ai/price-max`` leaves after its storage, once per outbid; Vast resumes it if
        that is enough. A failed call is said and tried again on the next look."""
        cap = watch.price_max
        if watch.on_outbid != "rebid" or cap is None or watch.rebid_for == watch.outbid_since:
            return
        bid = math.floor((cap - instance.storage_total_cost) * 1e6) / 1e6  # never above
        current = instance.dph_total - instance.storage_total_cost
        if bid <= current + 1e-6:
            watch.rebid_for = watch.outbid_since
            await progress.event(
                "Normal",
                "BidAtCap",
                f"instance {instance.id} already bids ${current:.4f}/h, all vast.ai/price-max "
                f"${cap:.4f}/h allows; waiting for Vast to resume it",
            )
            return
        try:
            await self._vast.change_bid(instance.id, bid)
        except VkError as exc:
            await progress.event("Warning", "RebidFailed", f"could not raise the bid: {exc}")
            return
        watch.rebid_for = watch.outbid_since
        self._poller.hurry([instance.id])
        await progress.event(
            "Normal",
            "BidRaised",
            f"instance {instance.id}: bid raised from ${current:.4f}/h to ${bid:.4f}/h "
            f"(vast.ai/price-max ${cap:.4f}/h, storage included)",
        )

    async def _fresh_sweep(self, progress: Progress) -> None:
        """Wait for a successful sweep that started now, reporting while Vast cannot list
        (e.g. a revoked API key: the list is refused)."""

        async def said(exc: Exception, delay: float) -> None:
            await progress.event("Warning", "VastAPIError", str(exc))
            if progress.pod.status.phase != "Running":
                await progress.waiting("VastAPIError", f"{exc}; retrying in {delay:.0f}s")

        await retry_until_done(
            self._poller.fresh, schedule=self._backoff, on=TRANSIENT, on_retry=said
        )

    async def _release_until_done(self, pod: Pod, progress: Progress, *, keep: int) -> None:
        """Destroy the pod's extra instances (all but ``keep``), retrying until done."""

        async def said(exc: Exception, _: float) -> None:
            await progress.event(
                "Warning",
                "DestroyFailed",
                f"could not destroy an extra instance yet, retrying: {exc}",
            )

        await retry_until_done(
            lambda: self.release(pod, keep=str(keep)),
            schedule=self._backoff,
            on=VK_FAILURES,
            on_retry=said,
        )


class _ImagePull:
    """The kubelet's ``Pulling`` and ``Pulled`` Events, for a pod under the agent (the
    kubelet's Events about its containers are the agent's there): Vast pulls the image while
    the instance is ``loading``, and has it once the instance runs. Said once per instance,
    and only for a pull this follow saw begin (an adopted running instance says nothing)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._since: float | None = None
        self._done = False

    async def observed(self, instance: Instance | None, observed: Observation) -> None:
        if self._done or instance is None:
            return
        container = chosen_container(self._progress.pod)
        image = container.image.strip()
        if self._since is None and instance.actual_status == "loading":
            self._since = trio.current_time()
            await self._progress.event(
                "Normal", "Pulling", f'Pulling image "{image}"', container=container.name
            )
        elif self._since is not None and isinstance(observed, Running):
            self._done = True
            took = go_seconds(trio.current_time() - self._since)
            await self._progress.event(
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image}" in {took} ({took} including waiting)',
                container=container.name,
            )


def go_seconds(seconds: float) -> str:
    """A duration as Go prints one truncated to the millisecond: ``1.234s``, ``850ms``."""
    millis = int(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    whole, rest = divmod(millis, 1000)
    if whole < 60:
        return f"{whole}.{rest:03d}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(whole, 60)
    fraction = f"{secs}.{rest:03d}".rstrip("0").rstrip(".")
    return f"{minutes}m{fraction}s"


def streams_refusal(what: str) -> str:
    """Why a pod without the agent has no exec, attach or port-forward, and the fix."""
    return (
        f"{what} the vk-trio agent inside the instance; this pod runs without it "
        f'(set the annotation {AGENT}: "true"; the node fetches the agent from its own image, '
        "or from --agent-url)"
    )


def _requirements(pod: Pod) -> Requirements:
    chosen = chosen_container(pod)
    return parse_requirements(
        pod.metadata.annotations, gpu_limit=chosen.resources.limits.get("nvidia.com/gpu")
    )


def _outbid_since(pod: Pod) -> str | None:
    """Since when the pod shows its instance outbid (``DisruptionTarget``, ``VastOutbid``)."""
    for condition in pod.status.conditions:
        if (condition.type, condition.status, condition.reason) == (
            DISRUPTION_TARGET,
            "True",
            OUTBID_REASON,
        ):
            return condition.last_transition_time
    return None


def _shows_running(pod: Pod) -> bool:
    """The pod's status shows a container running: its instance ran before a restart."""
    return any(status.state.running for status in pod.status.container_statuses)
