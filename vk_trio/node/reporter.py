"""How one pod's supervisor (and its provider) tell the world what happens: status, Events,
annotations, logs. ``PodReporter`` is the ``Progress`` a provider is handed.

Every change of a ``PodView`` goes through ``PodReporter.show``, which has
``pods/<name>/status`` patched (by the node's ``StatusWriter``) only when something a user
can see changed (timestamps aside), so a steady pod costs no API calls. Events are
aggregated by the recorder (``count`` goes up instead of new objects). Status and Events
never fail the pod: a Kubernetes error is logged and the status is re-sent with the next
change. An annotation write does raise: some are promises (``vast.ai/buying`` must be on
record before a create is sent), and only the writer knows whether its write was one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from loguru import logger

from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError, KubeNotFound
from vk_trio.kube.events import EventRecorder
from vk_trio.kube.models import Pod
from vk_trio.kube.pods import patch_pod_annotations, patch_pod_status
from vk_trio.node.handle import PodHandle
from vk_trio.node.status import PodView, now_rfc3339, status_patch, without_times
from vk_trio.node.status_writer import StatusWriter


def field_path(container: str, *, init: bool = False) -> str:
    """How the kubelet names a container in an Event's ``involvedObject.fieldPath``."""
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


class PodReporter:
    """Reports one pod; owned by that pod's supervisor.

    It keeps no copy of the pod of its own: ``pod`` is the handle's, the newest the watch
    delivered (or an annotation patch answered). A thousand pods held twice cost megabytes.
    """

    def __init__(
        self,
        kube: KubeClient,
        events: EventRecorder,
        statuses: StatusWriter,
        handle: PodHandle,
        *,
        chosen: str,
    ) -> None:
        self._kube = kube
        self._events = events
        self._statuses = statuses
        self._handle = handle
        pod = handle.pod
        self.chosen = chosen
        self.view = PodView(start_time=pod.status.start_time or now_rfc3339())
        self._shown: bytes | None = None
        """The last status submitted, timestamps aside, as JSON: what the next view is
        compared with. Bytes, because the garbage collector walks every dict and list a
        steady pod keeps alive, and a status is a dozen of them."""
        self._pending: dict[str, Any] | None = None
        """The status the writer sends next; dropped once sent."""
        self._conditions: dict[str, str] = {c.type: c.status for c in pod.status.conditions}
        self.log = logger.bind(pod=pod.key, uid=pod.uid)

    @property
    def pod(self) -> Pod:
        """The newest copy of the pod (annotations included)."""
        return self._handle.pod

    async def show(self, view: PodView) -> None:
        """Make Kubernetes show ``view`` (patching only when it changed).

        Returns at once: the node's ``StatusWriter`` sends the newest status of each pod.
        """
        self.view = view
        status = status_patch(self.pod, view, chosen=self.chosen)
        shown = msgspec.json.encode(without_times(status))
        if shown == self._shown:
            return
        for condition in status["conditions"]:
            if self._conditions.get(condition["type"]) != condition["status"]:
                condition.setdefault("lastTransitionTime", now_rfc3339())
        self._shown, self._pending = shown, status
        self._conditions = {c["type"]: c["status"] for c in status["conditions"]}
        self._statuses.submit(self.pod.uid, self._write)

    async def refresh(self) -> None:
        """Show the current view again for a newer pod whose spec changes the status (an
        ephemeral container added); nothing before the first ``show``."""
        if self._shown is not None:
            await self.show(self.view)

    async def _write(self) -> None:
        status, self._pending = self._pending, None
        if status is None:
            return
        try:
            await patch_pod_status(self._kube, self.pod, status)
        except KubeError as exc:
            self.log.warning("pod status patch failed; will resend", error=str(exc))
            if self._pending is None:  # else a newer one is on its way
                self._shown = None

    async def waiting(self, reason: str, message: str) -> None:
        """Show the container waiting for ``reason``; the phase stays where it is."""
        await self.show(self.view.waiting(reason, message))

    async def event(
        self,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        *,
        log_as: str | None = None,
        container: str | None = None,
        init: bool = False,
    ) -> None:
        """Record an Event on the pod and log it once: never raises.

        The log line reads ``log_as`` (the phrases the README's troubleshooting greps for,
        such as "offers found" or "Instance ready"), else the reason; the Event's message is
        its ``detail`` field. ``container`` makes it about that container, as the kubelet's
        are (``involvedObject.fieldPath``: ``spec.containers{app}``, with ``init``
        ``spec.initContainers{init}``), which ``kubectl describe`` shows in "From".
        """
        log = self.log.warning if kind == "Warning" else self.log.info
        # The message is a field, never part of the format string: it may quote user input.
        log(log_as or reason, reason=reason, detail=message)
        path = field_path(container, init=init) if container else ""
        await self._events.emit(
            self.pod, type=kind, reason=reason, message=message, field_path=path
        )

    async def annotate(self, annotations: Mapping[str, str | None]) -> None:
        """Record state on the pod itself, so it survives a restart of this process.

        Raises ``KubeError`` when the write failed (see the module docstring).
        """
        updated = await patch_pod_annotations(self._kube, self.pod, dict(annotations))
        if updated is None:
            raise KubeNotFound(f"pod {self.pod.key} (uid {self.pod.uid}) no longer exists")
        self._handle.update(updated)  # the watch may not have brought it yet
