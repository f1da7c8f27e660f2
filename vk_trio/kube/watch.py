"""The pods bound to this node, as an endless stream of events: list, then watch, forever.

Three layers, each doing one thing (kopf ``watching.py``):

1. ``_watch_once`` makes one watch request and yields its decoded envelopes. It ends when the
   server ends the stream (``timeoutSeconds``), or when nothing (not even a bookmark) arrived
   for ``inactivity_timeout`` seconds: a trio cancel scope around each read, so a silently dead
   connection is noticed without a read timeout on the socket.
2. ``_ListWatch`` (driven by ``watch_pods``) keeps the reflector state: the last
   resourceVersion and the last-seen pod per uid. It LISTs (paginated), yields every pod as
   ``ADDED`` (even ones seen before: the consumer dedupes by uid), a ``DELETED`` tombstone for
   every pod known before but missing from the new list, then ``SYNCED``; then it watches from
   the list's resourceVersion, re-watching from the last seen one whenever a stream ends.
3. ``watch_pods`` owns the failure policy: ``410 Gone`` (an HTTP 410, or an ``ERROR`` event
   with code 410 / reason Expired) relists at once; any other failure (connection errors,
   5xx, other ``ERROR`` events) backs off along ``vk_trio.retry.POD_WATCH`` and re-watches from the
   last resourceVersion, relisting after ``RELIST_AFTER_FAILURES`` failures in a row.

A pod vk-trio cannot decode (a field of the wrong type, from a non-conforming server or a
newer API) is logged by name and skipped, never fatal: an ADDED or MODIFIED event for it is
dropped, and in a list it keeps the state last seen (it is not reported as deleted, which
would destroy its instance). A DELETED event whose object cannot be decoded still deletes the
pod it names, with the last-known state as the tombstone, so the instance is not left billing.

What escalates out of ``watch_pods``: ``KubeForbidden`` (RBAC: retrying cannot help) and
cancellation. Everything else is retried forever, because a node that stops watching its pods
is worse than one that keeps trying.

Consumers should close the generator deterministically
(``async with contextlib.aclosing(watch_pods(...)) as events``), so the open HTTP stream is
released when they stop.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

import msgspec
import trio
from loguru import logger

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError, KubeForbidden, KubeGone
from vk_trio.kube.models import Pod
from vk_trio.metrics import WATCH_RESTARTS
from vk_trio.retry import POD_WATCH, Backoff

__all__ = [
    "INACTIVITY_TIMEOUT",
    "PodEvent",
    "watch_pods",
]

INACTIVITY_TIMEOUT = 600.0
"""Seconds without any line (event or bookmark) before a watch is presumed dead and re-opened.
The apiserver sends bookmarks about once a minute when asked, but promises nothing, and a
quiet node legitimately has no pod events for hours; a re-watch is cheap, so the default is
the upper end of ``timeout_range`` (a healthy stream ends by itself before this fires)."""

RELIST_AFTER_FAILURES = 3
"""Consecutive watch failures after which we relist instead of re-watching from the last RV."""

QUIET_STREAM_MIN = 1.0
"""A watch that ends sooner than this without a single line is followed by a short pause."""

LIST_PAGE_SIZE = 500


class PodEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One change to a pod on this node, or ``SYNCED`` after each (re)list."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "SYNCED"]
    pod: Pod | None = None
    """The pod (its last known state for ``DELETED``); ``None`` for ``SYNCED``."""


class _Envelope(msgspec.Struct):
    type: str
    object: msgspec.Raw


class _Meta(msgspec.Struct, rename="camel"):
    resource_version: str = ""


class _PodMeta(msgspec.Struct, rename="camel"):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""


class _PodHead(msgspec.Struct):
    """A pod's identity alone, to name (and, when deleted, forget) a pod that fails to decode."""

    metadata: _PodMeta = msgspec.field(default_factory=_PodMeta)


class _ObjectHead(msgspec.Struct):
    """Just enough of an object to read a bookmark's resourceVersion or an ERROR's Status."""

    metadata: _Meta = msgspec.field(default_factory=_Meta)
    kind: str = ""
    code: int = 0
    reason: str = ""
    message: str = ""


class _ListMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _PodList(msgspec.Struct):
    """Items stay untyped: one undecodable pod must not hide every other pod of the node."""

    items: list[Any] = msgspec.field(default_factory=list)
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


_Change = Literal["ADDED", "MODIFIED", "DELETED"]
_CHANGES: dict[str, _Change] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}

_envelope_decoder = msgspec.json.Decoder(_Envelope)
_head_decoder = msgspec.json.Decoder(_ObjectHead)
_pod_decoder = msgspec.json.Decoder(Pod)
_pod_head_decoder = msgspec.json.Decoder(_PodHead)


def _undecodable(pod: Any, error: msgspec.DecodeError, what: str) -> _PodMeta | None:
    """Log a pod (raw JSON or a decoded list item) that failed to decode, by name when its
    metadata can be read; returns that identity."""
    try:
        if isinstance(pod, msgspec.Raw):
            meta: _PodMeta | None = _pod_head_decoder.decode(pod).metadata
        else:
            meta = msgspec.convert(pod, _PodHead).metadata
    except msgspec.DecodeError:
        meta = None
    name = f"{meta.namespace}/{meta.name} (uid {meta.uid})" if meta else "unnamed pod"
    logger.warning("pod watch: undecodable object skipped", what=what, name=name, error=str(error))
    return meta


class _WatchError(KubeError):
    """An ``ERROR`` event that is not an expiry: back off and re-watch."""


async def _watch_once(
    client: KubeClient,
    *,
    params: dict[str, Any],
    inactivity_timeout: float,
) -> AsyncGenerator[_Envelope, None]:
    """Layer 1: one watch request; yields envelopes until the stream ends or goes quiet."""
    async with client.stream_lines("/api/v1/pods", params=params) as lines:
        iterator = aiter(lines)
        while True:
            # The scope covers only the read, never the yield: time the consumer spends on
            # an event does not count as inactivity.
            with trio.move_on_after(inactivity_timeout) as scope:
                line = await anext(iterator, None)
            if scope.cancelled_caught:
                logger.info(
                    "pod watch: quiet too long, reconnecting", quiet_seconds=inactivity_timeout
                )
                return
            if line is None:
                return
            try:
                envelope = _envelope_decoder.decode(line)
            except msgspec.DecodeError as error:
                logger.warning("pod watch: undecodable line skipped", error=str(error))
                continue
            yield envelope


class _ListWatch:
    """Layer 2: the reflector's memory (last RV, last-seen pods) and its list/watch steps."""

    def __init__(
        self,
        client: KubeClient,
        *,
        node_name: str,
        timeout_range: tuple[int, int],
        inactivity_timeout: float,
    ) -> None:
        self.client = client
        self.selector = f"spec.nodeName={node_name}"
        self.timeout_range = timeout_range
        self.inactivity_timeout = inactivity_timeout
        self.resource_version: str | None = None
        self.known: dict[str, Pod] = {}
        self.quiet = True
        """Whether the last watch ended within ``QUIET_STREAM_MIN`` without a single line:
        a server that closes streams at once must not turn re-watching into a hot loop."""

    async def relist(self) -> AsyncGenerator[PodEvent, None]:
        """LIST every page, then ADDED for each pod, tombstones for the vanished, SYNCED."""
        pods: list[Pod] = []
        token = ""
        while True:
            params: dict[str, Any] = {"fieldSelector": self.selector, "limit": LIST_PAGE_SIZE}
            if token:
                params["continue"] = token
            raw = await self.client.request("GET", "/api/v1/pods", params=params)
            page = msgspec.convert(raw, _PodList)
            for item in page.items:
                try:
                    pods.append(msgspec.convert(item, Pod))
                except msgspec.DecodeError as error:
                    meta = _undecodable(item, error, "pod in list")
                    kept = self.known.get(meta.uid) if meta and meta.uid else None
                    if kept is not None:  # keep its last state: vanishing would delete it
                        pods.append(kept)
            token = page.metadata.continue_
            if not token:
                break
        self.resource_version = page.metadata.resource_version
        previous, self.known = self.known, {pod.uid: pod for pod in pods}
        logger.debug("pod watch: listed", pods=len(pods), resource_version=self.resource_version)
        for pod in pods:
            yield PodEvent(type="ADDED", pod=pod)
        for uid, pod in previous.items():
            if uid not in self.known:
                yield PodEvent(type="DELETED", pod=pod)
        yield PodEvent(type="SYNCED")

    async def watch(self) -> AsyncGenerator[PodEvent, None]:
        """One watch from the last RV. Raises ``KubeGone`` on expiry, ``_WatchError`` on ERROR."""
        params: dict[str, Any] = {
            "fieldSelector": self.selector,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": random.randint(*self.timeout_range),
        }
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        self.quiet = True
        started = trio.current_time()
        stream = _watch_once(self.client, params=params, inactivity_timeout=self.inactivity_timeout)
        async with aclosing(stream) as envelopes:
            async for envelope in envelopes:
                self.quiet = False
                event = self._apply(envelope)
                if event is not None:
                    yield event
        if self.quiet and trio.current_time() - started >= QUIET_STREAM_MIN:
            self.quiet = False  # a long silent stream (inactivity): nothing suspicious

    def _apply(self, envelope: _Envelope) -> PodEvent | None:
        """Update the reflector state from one envelope; the event to yield, if any."""
        kind = envelope.type
        if kind in ("BOOKMARK", "ERROR"):
            self._control(envelope)
            return None
        change = _CHANGES.get(kind)
        if change is None:
            logger.warning("pod watch: unknown event type ignored", event_type=kind)
            return None
        try:
            pod = _pod_decoder.decode(envelope.object)
        except msgspec.DecodeError as error:
            meta = _undecodable(envelope.object, error, f"{kind} event")
            if meta is None:
                return None
            self.resource_version = meta.resource_version or self.resource_version
            last = self.known.pop(meta.uid, None) if kind == "DELETED" else None
            return PodEvent(type="DELETED", pod=last) if last is not None else None
        self.resource_version = pod.metadata.resource_version or self.resource_version
        if kind == "DELETED":
            self.known.pop(pod.uid, None)
        else:
            self.known[pod.uid] = pod
        return PodEvent(type=change, pod=pod)

    def _control(self, envelope: _Envelope) -> None:
        """A ``BOOKMARK`` moves the resourceVersion on; an ``ERROR`` raises (``KubeGone`` for
        an expired one, so the caller relists)."""
        kind = envelope.type
        try:
            status = _head_decoder.decode(envelope.object)
        except msgspec.DecodeError as error:
            if kind == "ERROR":
                raise _WatchError(f"watch ERROR with an unreadable object: {error}") from None
            logger.warning("pod watch: unreadable bookmark ignored", error=str(error))
            return
        if kind == "BOOKMARK":
            self.resource_version = status.metadata.resource_version or self.resource_version
            return
        text = f"watch ERROR {status.code} {status.reason}: {status.message}"
        if status.code == 410 or status.reason in ("Expired", "Gone"):
            raise KubeGone(text, status=410, reason=status.reason)
        raise _WatchError(text, status=status.code or None, reason=status.reason)


async def watch_pods(
    client: KubeClient,
    *,
    node_name: str,
    timeout_range: tuple[int, int] = (300, 600),
    inactivity_timeout: float = INACTIVITY_TIMEOUT,
    backoff: Backoff = POD_WATCH,
) -> AsyncGenerator[PodEvent, None]:
    """Every change to pods bound to ``node_name``, forever (layer 3: the failure policy).

    Yields ``ADDED`` for each pod of each (re)list, ``SYNCED`` after each (re)list,
    ``MODIFIED``/``ADDED``/``DELETED`` from the watch, and ``DELETED`` tombstones (with the
    last-known Pod) for pods that disappeared while we were not watching.

    Owns: one open watch stream at a time (closed when the generator is closed).
    Retries: everything but ``KubeForbidden``, with capped backoff; see the module docstring.
    Escalates: ``KubeForbidden`` and cancellation.
    """
    if not 0 < timeout_range[0] <= timeout_range[1]:
        raise ValueError(f"timeout_range must be 0 < low <= high, got {timeout_range}")
    state = _ListWatch(
        client,
        node_name=node_name,
        timeout_range=timeout_range,
        inactivity_timeout=inactivity_timeout,
    )
    must_list = True
    failures = 0
    while True:
        try:
            if must_list:
                async for event in state.relist():
                    yield event
                must_list = False
            async with aclosing(state.watch()) as events:
                async for event in events:
                    failures = 0
                    yield event
            # The stream ended normally (timeoutSeconds or inactivity): re-watch from the last
            # RV. A stream that ended at once without a single line may be a server closing on
            # us; pause briefly so that cannot become a hot loop.
            if not state.quiet:
                failures = 0
                continue
            await trio.sleep(backoff.first)
        except KubeForbidden:
            raise
        except (KubeError, msgspec.DecodeError, msgspec.ValidationError) as error:
            failures += 1
            relist, delay = _after_failure(error, failures, backoff, listing=must_list)
            must_list = must_list or relist
            if delay:
                await trio.sleep(delay)


def _after_failure(
    error: Exception, failures: int, backoff: Backoff, *, listing: bool
) -> tuple[bool, float]:
    """Whether to relist, and how long to wait, after failure number ``failures`` in a row.

    An expired resourceVersion (410) relists at once the first time, which is the normal
    expiry path; other API errors re-watch from the last resourceVersion and relist only
    after ``RELIST_AFTER_FAILURES``; a list body we could not read relists, like a server
    error. ``listing``: a relist is due anyway (said in the log line).
    """
    if isinstance(error, KubeGone):
        logger.info("pod watch: relisting", error=str(error))
        WATCH_RESTARTS.labels("expired").inc()
        return True, 0.0 if failures == 1 else backoff.delay(failures)
    if isinstance(error, KubeError):
        WATCH_RESTARTS.labels("error").inc()
        relist = failures >= RELIST_AFTER_FAILURES
        delay = backoff.delay(failures)
        logger.warning(
            "pod watch failed; retrying",
            failures=failures,
            error=str(error),
            retry_in=round(delay, 2),
            relist=listing or relist,
        )
        return relist, delay
    logger.warning("pod watch: undecodable list; retrying", error=str(error))
    return True, backoff.delay(failures)
