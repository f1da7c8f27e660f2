"""``kubectl logs`` of a pod on a Vast instance: Vast's log upload, read as the kubelet would.

Vast hands out a container's recent output only as a snapshot (``request_logs``: the last N
lines, uploaded and fetched from a ``result_url``), paced on the client's ``request_logs``
lane so every follower shares one rate limit. ``VastLogs`` keeps one ``LogBook`` per pod and
instance, shared by all its readers; when a pod's instance is replaced, the old book becomes
its ``previous`` (at most ``PREVIOUS_LINES``), for ``kubectl logs --previous``. Books are
dropped when the pod is forgotten.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

from vk_trio.kube.models import Pod
from vk_trio.node.logbook import FOLLOW_INTERVAL, LogBook, stream_logs
from vk_trio.node.provider import LogOptions, NotReady, ProviderUnavailable
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import Instance, InstanceNotFound, VastClient, VastError

__all__ = ["VastLogs"]

LOG_TAIL = 1000
"""Lines asked of Vast per fetch (its CLI's default)."""
PREVIOUS_LINES = 200
"""Lines kept of a replaced instance's logs for ``kubectl logs --previous``."""
LIVE_STATUSES = (None, "created", "loading", "running")
"""Vast statuses of an instance that may still print: a follower keeps reading."""


class VastLogs:
    """The logs of each pod's newest instance, and of the one it replaced."""

    def __init__(
        self, vast: VastClient, poller: InstancePoller, *, interval: float = FOLLOW_INTERVAL
    ) -> None:
        self._vast = vast
        self._poller = poller
        self._interval = interval
        self._books: dict[str, tuple[int, LogBook]] = {}
        """Pod UID → (instance id, its book)."""
        self._previous: dict[str, LogBook] = {}

    async def stream(self, pod: Pod, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """``Provider.logs``: the container's output under ``options``."""
        name = pod.metadata.name
        if options.previous:
            previous = self._previous.get(pod.uid)
            if previous is None:
                raise NotReady(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return stream_logs(previous, options)
        instance = self._current(pod.uid)
        if instance is None:
            raise NotReady(
                f'container "{container}" in pod "{name}" is waiting to start: '
                "no instance yet: waiting for an offer"
            )
        book = self._book(pod.uid, instance)
        await book.refresh(max_age=self._interval)

        def alive() -> bool:
            latest = self._current(pod.uid)
            return (
                latest is not None
                and latest.id == instance.id
                and latest.actual_status in LIVE_STATUSES
            )

        return stream_logs(book, options, alive=alive, interval=self._interval)

    def forget(self, uid: str) -> None:
        """The pod is gone: its books go with it."""
        self._books.pop(uid, None)
        self._previous.pop(uid, None)

    def _current(self, uid: str) -> Instance | None:
        instances = self._poller.instances(uid)
        return max(instances, key=lambda i: i.id) if instances else None

    def _book(self, uid: str, instance: Instance) -> LogBook:
        held = self._books.get(uid)
        if held is not None and held[0] == instance.id:
            return held[1]
        if held is not None:  # replaced: keep the tail of the old one for --previous
            old = LogBook(_nothing_more, max_lines=PREVIOUS_LINES)
            old.add_snapshot("\n".join(line.text for line in held[1].lines[-PREVIOUS_LINES:]))
            self._previous[uid] = old
        book = LogBook(functools.partial(self._fetch, instance.id))
        self._books[uid] = (instance.id, book)
        return book

    async def _fetch(self, instance_id: int) -> str:
        try:
            return await self._vast.request_logs(instance_id, tail=LOG_TAIL)
        except InstanceNotFound as exc:
            raise NotReady(f"instance {instance_id} is gone: {exc}") from exc
        except VastError as exc:
            raise ProviderUnavailable(
                f"Vast.ai could not give the logs of {instance_id}: {exc}"
            ) from exc


async def _nothing_more() -> str:
    """A previous book's fetch: its instance is gone, so its lines are all there is."""
    return ""
