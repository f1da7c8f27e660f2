"""The Vast provider's dealings with each pod's agent: handing it the pod, following what it
reports, refreshing its volumes, and asking it for logs and usage.

``PodAgents.follow`` is ``Provider.processes`` for a pod under the agent: it waits for the
instance to publish the agent's port, connects, hands over the bundle (``Start``, idempotent:
a restarted node reconnects to a running agent without restarting anything), then relays the
agent's reports. A lost link is retried on the pod backoff schedule, said once as an Event
after a few failures in a row. Every ``VOLUME_REFRESH`` seconds it reads the pod's volumes
again and sends any that changed (a ConfigMap or Secret edited), as the kubelet's sync loop
does (it re-reads them about once a minute).

The link of each pod is remembered while its report stream runs, for logs, usage and the
streams of ``kubectl exec``, ``attach`` and ``port-forward`` (``agent_streams``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import trio
from loguru import logger

from vk_trio.agent.bootstrap import EXIT_REASONS
from vk_trio.agent.protocol import AGENT_PORT, Volume
from vk_trio.errors import PermanentError, TemporaryError, describe_error
from vk_trio.kube.models import Pod
from vk_trio.logs import redact
from vk_trio.node.provider import (
    AttachOptions,
    ExecOptions,
    Exited,
    LogOptions,
    MachineFailed,
    NotReady,
    Observation,
    Processes,
    ProcessIO,
    Progress,
    ProviderUnavailable,
    Usage,
)
from vk_trio.provider import agent_streams
from vk_trio.provider.agent_link import AgentLink, AgentRefused, AgentUnreachable
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.runtime import AgentDelivery, ImageConfigs, InstanceFacts, pod_bundle
from vk_trio.provider.spec import ObjectLookup
from vk_trio.provider.volumes import pod_volumes
from vk_trio.retry import AGENT_LINK
from vk_trio.vast.models import Instance

__all__ = ["VOLUME_REFRESH", "PodAgents", "agent_failure"]

VOLUME_REFRESH = 30.0
"""Seconds between reads of a pod's ConfigMaps and Secrets for its volumes: a change reaches
the files within a minute, as the kubelet promises."""
SAID_AFTER = 3
"""Failed connections in a row before the pod gets a Warning Event (the first few are the
agent still downloading and starting)."""


class PodAgents:
    """Links to the agents of one node's pods."""

    def __init__(
        self,
        delivery: AgentDelivery,
        poller: InstancePoller,
        objects: ObjectLookup,
        images: ImageConfigs,
    ) -> None:
        self._delivery = delivery
        self._poller = poller
        self._objects = objects
        self.images = images
        self._links: dict[str, AgentLink] = {}
        self._seen: dict[str, int] = {}
        """Pod UID → the newest agent event already passed on (recorded as an Event)."""

    def forget(self, pod: Pod) -> None:
        self._links.pop(pod.uid, None)
        self._seen.pop(pod.uid, None)

    async def follow(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Processes, None]:
        """``Provider.processes``: the agent's reports, reconnecting until cancelled."""
        waits = AGENT_LINK.delays()
        failures = 0
        while True:
            link, facts = await self._link(pod.uid, int(instance))
            try:
                async for report in self._session(link, facts, progress):
                    failures = 0
                    waits = AGENT_LINK.delays()
                    yield report
            except (TemporaryError, PermanentError) as exc:
                failures += 1
                await self._failed(exc, failures, progress)
            finally:
                self._links.pop(pod.uid, None)
            await trio.sleep(waits.next())

    async def _link(self, uid: str, instance: int) -> tuple[AgentLink, InstanceFacts]:
        """The link to the agent once the instance publishes its port, and what the
        bundle takes from the instance."""
        while True:
            version = self._poller.version(uid)
            found = next((i for i in self._poller.instances(uid) if i.id == instance), None)
            link = self._endpoint_link(uid, found) if found else None
            if found is not None and link is not None:
                return link, _facts(found)
            await self._poller.wait_changed(uid, version)

    def _endpoint_link(self, uid: str, instance: Instance) -> AgentLink | None:
        endpoint = instance.endpoints().get(f"{AGENT_PORT}/tcp")
        if endpoint is None:
            return None
        host, _, port = endpoint.rpartition(":")
        return AgentLink(self._delivery.keys_for(uid), host, int(port))

    async def _session(
        self, link: AgentLink, facts: InstanceFacts, progress: Progress
    ) -> AsyncIterator[Processes]:
        bundle, secrets = await pod_bundle(progress.pod, self._objects, self.images, facts)
        for secret in secrets:
            redact(secret)
        started = await link.start(bundle)
        uid = progress.pod.uid
        log = logger.bind(pod=progress.pod.key, uid=uid)
        log.info("agent linked", started=started, agent=f"{link.host}:{link.port}")
        self._links[uid] = link
        if started:
            self._seen[uid] = 0
        sent = {volume.name: volume for volume in bundle.volumes}
        refreshed = trio.current_time()
        async for report in link.watch():
            yield self._new_events(uid, report)
            if trio.current_time() - refreshed >= VOLUME_REFRESH:
                refreshed = trio.current_time()
                await self._refresh(link, progress.pod, sent)

    def _new_events(self, uid: str, report: Processes) -> Processes:
        """The report with only the events not passed on before. A node that restarted
        (nothing seen, and the agent already ran the pod) takes the first report's events
        as recorded by its predecessor; an agent that counts from 1 again (it restarted)
        starts the count anew."""
        newest = max((e.seq for e in report.events), default=0)
        seen = self._seen.get(uid)
        if seen is None or newest < seen:
            seen = newest if seen is None else 0
        self._seen[uid] = max(seen, newest)
        return replace(report, events=tuple(e for e in report.events if e.seq > seen))

    async def _refresh(self, link: AgentLink, pod: Pod, sent: dict[str, Volume]) -> None:
        """Send the volumes whose contents changed since they were last sent."""
        try:
            volumes, secrets = await pod_volumes(pod, self._objects)
        except TemporaryError as exc:  # a ConfigMap deleted meanwhile: the files stay
            logger.bind(pod=pod.key).info("volumes not refreshed", error=str(exc))
            return
        for secret in secrets:
            redact(secret)
        for volume in volumes:
            if volume.files is not None and sent.get(volume.name) != volume:
                await link.update_volume(volume)
                sent[volume.name] = volume

    async def _failed(self, exc: Exception, failures: int, progress: Progress) -> None:
        message = describe_error(exc)
        log = logger.bind(pod=progress.pod.key, uid=progress.pod.uid)
        log.info("agent link failed", failures=failures, error=message)
        if isinstance(exc, AgentRefused):
            await progress.event("Warning", "AgentRefused", message)
        elif isinstance(exc, AgentUnreachable):
            if failures == SAID_AFTER:
                await progress.event("Warning", "AgentUnreachable", message)
        else:  # the bundle: a ConfigMap, a Secret, the image's config
            reason = getattr(exc, "reason", "CreateContainerConfigError")
            await progress.event("Warning", str(reason), message)
            await progress.waiting(str(reason), message)

    # -- what the kubelet API asks ----------------------------------------------------------

    def linked(self, pod: Pod) -> bool:
        """Whether the pod's agent answers now (its report stream runs)."""
        return pod.uid in self._links

    def _linked(self, pod: Pod, container: str) -> AgentLink:
        link = self._links.get(pod.uid)
        if link is None:
            raise NotReady(
                f'container "{container}" in pod "{pod.metadata.name}" is waiting to start: '
                "the vk-trio agent inside its instance is not linked yet"
            )
        return link

    async def logs(self, pod: Pod, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        link = self._linked(pod, container)
        stream = link.logs(container, options)
        try:
            first = await anext(stream, b"")
        except AgentRefused as exc:
            raise NotReady(str(exc)) from exc
        except AgentUnreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc
        return _prepend(first, stream)

    def exec(
        self, pod: Pod, container: str, options: ExecOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        return agent_streams.exec_in(self._linked(pod, container), container, options)

    def attach(
        self, pod: Pod, container: str, options: AttachOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        return agent_streams.attach(self._linked(pod, container), container, options)

    def port_forward(
        self, pod: Pod, container: str, port: int
    ) -> AbstractAsyncContextManager[trio.abc.HalfCloseableStream]:
        return agent_streams.port_forward(self._linked(pod, container), port)

    async def restart(self, pod: Pod, message: str) -> None:
        """Restart the container's process in place (raises ``VkError`` when unreachable)."""
        link = self._links.get(pod.uid)
        if link is None:
            raise AgentUnreachable("the vk-trio agent inside the instance is not linked")
        await link.restart(message)

    async def stop(self, pod: Pod, grace: float) -> None:
        """Ask the agent to stop the pod gracefully (its ``preStop`` hooks). The report
        stream has ended by now (the pod is deleted), so the link is made anew from any
        instance of the pod that publishes the agent's port; none: nothing to stop."""
        link = self._links.get(pod.uid)
        if link is None:
            instances = self._poller.instances(pod.uid)
            links = (self._endpoint_link(pod.uid, i) for i in instances)
            link = next((found for found in links if found is not None), None)
        if link is None:
            return
        await link.stop(grace)

    async def usage(self, pod: Pod) -> Usage | None:
        link = self._links.get(pod.uid)
        if link is None:
            return None
        try:
            return await link.usage()
        except (AgentUnreachable, AgentRefused):
            return None


def _facts(instance: Instance) -> InstanceFacts:
    """The instance's address, and its cores and disk as the allocatable that stands in
    for an unset limit (Vast reports no memory for an instance)."""
    allocatable: dict[str, str] = {}
    if instance.cpu_cores_effective:
        allocatable["cpu"] = f"{instance.cpu_cores_effective:g}"
    if instance.disk_space:
        allocatable["ephemeral-storage"] = f"{instance.disk_space:g}G"
    return InstanceFacts(address=instance.address, allocatable=allocatable)


def agent_failure(observed: Observation) -> Exited | None:
    """How an instance that was to run the agent failed because of it, if it did: its image
    has no ``/bin/sh`` for the bootstrap (another machine would fail the same way), or the
    bootstrap exited with one of its own codes (no downloader, a failed download, a wrong
    checksum). None for anything else."""
    if isinstance(observed, MachineFailed) and _NO_SHELL.search(observed.message):
        return Exited(
            NO_SHELL_EXIT,
            "the image has no /bin/sh, so the vk-trio agent's bootstrap cannot run in it; "
            "use an image with a shell (busybox is enough)",
        )
    if isinstance(observed, Exited) and observed.exit_code in EXIT_REASONS:
        return Exited(observed.exit_code, EXIT_REASONS[observed.exit_code])
    return None


_NO_SHELL = re.compile(r'exec: "(/bin/)?sh": (executable file not found|no such file)')
NO_SHELL_EXIT = 127
"""What a shell answers for a command it cannot find: the bootstrap's shell is missing."""


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
