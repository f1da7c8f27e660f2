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
from vk_trio.provider.runtime import AgentDelivery, ImageConfigs, pod_bundle
from vk_trio.provider.spec import ObjectLookup
from vk_trio.provider.volumes import pod_volumes
from vk_trio.retry import AGENT_LINK

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

    def forget(self, pod: Pod) -> None:
        self._links.pop(pod.uid, None)

    async def follow(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Processes, None]:
        """``Provider.processes``: the agent's reports, reconnecting until cancelled."""
        waits = AGENT_LINK.delays()
        failures = 0
        while True:
            link = await self._link(pod.uid, int(instance))
            try:
                async for report in self._session(link, progress):
                    failures = 0
                    waits = AGENT_LINK.delays()
                    yield report
            except (TemporaryError, PermanentError) as exc:
                failures += 1
                await self._failed(exc, failures, progress)
            finally:
                self._links.pop(pod.uid, None)
            await trio.sleep(waits.next())

    async def _link(self, uid: str, instance: int) -> AgentLink:
        """The link to the agent once the instance publishes its port."""
        while True:
            version = self._poller.version(uid)
            found = next((i for i in self._poller.instances(uid) if i.id == instance), None)
            endpoint = found.endpoints().get(f"{AGENT_PORT}/tcp") if found else None
            if endpoint is not None:
                host, _, port = endpoint.rpartition(":")
                return AgentLink(self._delivery.keys_for(uid), host, int(port))
            await self._poller.wait_changed(uid, version)

    async def _session(self, link: AgentLink, progress: Progress) -> AsyncIterator[Processes]:
        bundle, secrets = await pod_bundle(progress.pod, self._objects, self.images)
        for secret in secrets:
            redact(secret)
        started = await link.start(bundle)
        log = logger.bind(pod=progress.pod.key, uid=progress.pod.uid)
        log.info("agent linked", started=started, agent=f"{link.host}:{link.port}")
        self._links[progress.pod.uid] = link
        sent = {volume.name: volume for volume in bundle.volumes}
        refreshed = trio.current_time()
        async for report in link.watch():
            yield report
            if trio.current_time() - refreshed >= VOLUME_REFRESH:
                refreshed = trio.current_time()
                await self._refresh(link, progress.pod, sent)

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

    async def usage(self, pod: Pod) -> Usage | None:
        link = self._links.get(pod.uid)
        if link is None:
            return None
        try:
            return await link.usage()
        except (AgentUnreachable, AgentRefused):
            return None


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
