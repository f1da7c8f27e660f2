"""The seam: what the kubelet half needs from a backend that runs pods, and nothing more.

As in virtual-kubelet, the node machinery (dispatch, supervisor, status, teardown) sees only
this ``Provider`` protocol; the Vast provider (``vk_trio.provider``) implements it, and tests
implement it with a fake on fake time. Nothing here names Vast: an "instance" is whatever
the backend rents to run one pod, identified by an opaque string.

The lifecycle a supervisor drives through it, one instance per turn::

    check(pod)                     which container runs; or wait for an edit (InvalidPod)
    adopt(pod, progress)           an instance an earlier process rented for this pod, if any
    acquire(pod, progress)         rent one; progress is reported through ``progress``
    follow(pod, id, progress)      observations until the instance ends
    release(pod)                   destroy everything rented for the pod, verified

Progress flows one way: the provider tells the ``Progress`` it is handed what it is doing
(a waiting reason, an Event, its own annotations); it never calls back into the lifecycle.
Cancellation is the caller's: a pod deleted mid-``acquire`` cancels it, and ``release``
then finds whatever the provider rented meanwhile (providers label what they rent with the
pod UID, so a rental whose answer was lost is still found).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from vk_trio.errors import PermanentError
from vk_trio.kube.models import Pod

__all__ = [
    "Booting",
    "Ended",
    "Exited",
    "InvalidPod",
    "Lost",
    "MachineFailed",
    "Observation",
    "Placement",
    "Progress",
    "Provider",
    "Running",
]


class InvalidPod(PermanentError):
    """The pod asks for something the provider cannot parse or honour; editing it is the fix.

    ``reason`` is the waiting reason shown on the pod (e.g. ``InvalidAnnotation``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Placement:
    """Which of the pod's containers the instance runs, and why the others do not."""

    container: str
    skipped: Mapping[str, str]
    """Every other container → the reason shown in its waiting state."""


# -- observations: what ``follow`` reports, provider-neutral ---------------------------------


@dataclass(frozen=True)
class Booting:
    """The instance is not serving: still starting, or (after it ran) rebooting or offline."""

    message: str


@dataclass(frozen=True)
class Running:
    """The workload runs and is reachable at ``address``."""

    address: str
    endpoints: Mapping[str, str]
    """Container port ("8000/tcp") → public "ip:port" where the world reaches it."""
    description: str
    """One line for the Event, e.g. ``instance 42 running at 203.0.113.7: 8000/tcp → …``."""
    container_id: str
    """``<scheme>://<id>``, the container's ID as ``kubectl describe`` shows it."""


@dataclass(frozen=True)
class Exited:
    """The container ended; ``exit_code`` None when the backend did not say (never success)."""

    exit_code: int | None
    message: str


@dataclass(frozen=True)
class MachineFailed:
    """The instance never ran because of its machine (boot timeout, runtime error, price
    above the cap): not the container's fault. The provider will not pick that machine again
    for this pod; the supervisor counts these to tell a bad host from a bad image."""

    reason: str
    message: str


@dataclass(frozen=True)
class Lost:
    """The instance disappeared, or stayed unreachable too long (``reason`` says which)."""

    reason: str
    message: str


Observation = Booting | Running | Exited | MachineFailed | Lost
Ended = Exited | MachineFailed | Lost
"""The observations after which ``follow`` ends."""


class Progress(Protocol):
    """What a provider may tell the world about one pod while it works for it."""

    @property
    def pod(self) -> Pod:
        """The newest copy of the pod (annotations included)."""
        ...

    async def waiting(self, reason: str, message: str) -> None:
        """Show the container waiting for ``reason`` (the pod's phase does not go back)."""
        ...

    async def event(
        self,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        *,
        log_as: str | None = None,
    ) -> None:
        """Record an Event on the pod, and log it (as ``log_as``, else ``reason``)."""
        ...

    async def annotate(self, annotations: Mapping[str, str | None]) -> None:
        """Record state on the pod itself (None removes a key): it survives a restart."""
        ...


class Provider(Protocol):
    """A backend that runs each pod on one rented instance at a time."""

    def check(self, pod: Pod) -> Placement:
        """Where the pod's containers run; ``InvalidPod`` if it cannot run as written."""
        ...

    async def adopt(self, pod: Pod, progress: Progress) -> str | Lost | None:
        """The instance an earlier run rented for ``pod`` and that still exists; ``Lost`` if
        the pod's record names one that is gone; None if there is none (buy one)."""
        ...

    async def acquire(self, pod: Pod, progress: Progress) -> str:
        """Rent an instance for ``pod`` and return its id; retries until it has one."""
        ...

    def follow(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Observation, None]:
        """Observations of ``instance`` as they change; the last one is an ``Ended``."""
        ...

    async def release(self, pod: Pod, *, keep: str | None = None) -> int:
        """Destroy every instance rented for ``pod`` but ``keep``, verified gone; return how
        many were destroyed. Raises ``VkError`` when that cannot be done yet (retry later)."""
        ...

    def forget(self, pod: Pod) -> None:
        """The pod is gone and released: drop whatever the provider kept about it."""
        ...
