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

What the kubelet API asks of a pod's running container, through the same seam (the node
checks first that the pod is its own and that the container is the one ``check`` placed, so
a provider is only ever asked about the container it runs)::

    logs(pod, container, options)  its output under ``LogOptions``, as a stream of bytes
    usage(pod)                     what it uses now (CPU, memory, disk, GPU), if known

A provider whose instances run a runtime of their own (the vk-trio agent, which runs the
pod's init containers and its container's process, restarts it in place and runs its exec
probes) says so in the ``Placement``; the lifecycle then follows that runtime's reports too::

    processes(pod, id, progress)   the pod's processes as the runtime reports them
    restart(pod, message)          restart the container's process in place
    stop(pod, grace)               the pod is deleted: stop its processes gracefully
                                   (their preStop hooks first), before ``release``

Both answer with streams or values, and fail with a ``ContainerError`` whose ``status`` is
the HTTP status the kubelet would answer with. So do the streaming verbs of ``kubectl exec``,
``attach`` and ``port-forward``, each an async context manager whose exit ends what it
opened (the exec'd process is killed, the forwarded connection closed)::

    exec(pod, container, ExecOptions)    a new process in the container, as ``ProcessIO``
    attach(pod, container, AttachOptions) the container's own process, as ``ProcessIO``
    port_forward(pod, port)              one TCP connection to the pod's ``port``, as a trio
                                         ``HalfCloseableStream``

A backend that cannot reach a pod's container that way says so in its ``Placement``
(``streams_refused``), so that the kubelet API refuses at once, before switching protocols.

Progress flows one way: the provider tells the ``Progress`` it is handed what it is doing
(a waiting reason, an Event, its own annotations); it never calls back into the lifecycle.
Cancellation is the caller's: a pod deleted mid-``acquire`` cancels it, and ``release``
then finds whatever the provider rented meanwhile (providers label what they rent with the
pod UID, so a rental whose answer was lost is still found).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import trio

from vk_trio.errors import PermanentError, VkError
from vk_trio.kube.models import Pod
from vk_trio.node.status import ProcessEvent, ProcessState

__all__ = [
    "AttachOptions",
    "Booting",
    "ContainerError",
    "Ended",
    "ExecOptions",
    "Exited",
    "Interrupted",
    "InvalidPod",
    "LogOptions",
    "Lost",
    "MachineFailed",
    "NotFound",
    "NotReady",
    "NotSupported",
    "Observation",
    "Placement",
    "Preempted",
    "ProcessEvent",
    "ProcessExit",
    "ProcessIO",
    "ProcessOutput",
    "ProcessState",
    "Processes",
    "Progress",
    "Provider",
    "ProviderUnavailable",
    "Running",
    "Usage",
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
    runtime: bool = False
    """A runtime inside the instance runs the pod's processes (init containers first) and
    reports them through ``Provider.processes``; its exec probes run there too."""
    streams_refused: str = ""
    """Why ``exec``, ``attach`` and ``port-forward`` cannot reach this pod's container (the
    message ``kubectl`` shows); empty when they can."""


# -- what the kubelet API asks: options, answers, errors -----------------------------------


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    """The query of ``GET /containerLogs/...``, parsed and validated as the kubelet does."""

    tail_lines: int | None = None
    """Only the last this many lines (before ``follow`` adds more)."""
    limit_bytes: int | None = None
    """Stop after this many bytes of output (follow included)."""
    timestamps: bool = False
    """Prefix every line with its RFC 3339 time and a space."""
    since_seconds: int | None = None
    since_time: _dt.datetime | None = None
    """Only lines newer than this (exclusive with ``since_seconds``)."""
    previous: bool = False
    """The logs of the previous instance of the container (after a restart or replacement)."""
    follow: bool = False
    """Keep the response open and send new lines until the container ends or the client
    leaves."""

    def cutoff(self, now: _dt.datetime) -> _dt.datetime | None:
        """The oldest time a line may have to be shown, or None for all of them."""
        if self.since_time is not None:
            return self.since_time
        if self.since_seconds is not None:
            return now - _dt.timedelta(seconds=self.since_seconds)
        return None


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a provider knows of the running container's usage; None where it does not."""

    start_time: _dt.datetime | None = None
    cpu_nano_cores: int | None = None
    memory_bytes: int | None = None
    disk_used_bytes: int | None = None
    disk_capacity_bytes: int | None = None
    gpu_utilisation: float | None = None
    """0..100 percent, as ``nvidia-smi`` shows it."""
    gpu_memory_bytes: int | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_name: str | None = None


class ContainerError(VkError):
    """A container's logs or streams cannot be served; ``status`` is the HTTP
    status the kubelet answers with, and the message reaches ``kubectl`` as it is: say what
    the container waits for ("no instance yet: waiting for an offer"), not "error"."""

    status = 500


class NotFound(ContainerError):
    """No such pod or container on this node."""

    status = 404


class NotReady(ContainerError):
    """The container has nothing to show yet (or any more): the message says what it waits
    for. The real kubelet answers 400 ("container ... is waiting to start: ...")."""

    status = 400


class NotSupported(ContainerError):
    """What was asked cannot be done for this pod as it runs (no runtime inside its instance
    to exec in, say): the message says why and what would change it."""

    status = 400


class ProviderUnavailable(ContainerError):
    """The backend could not answer now (its API failed); trying again later may work."""

    status = 503


# -- the streaming verbs: exec, attach, port-forward ----------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExecOptions:
    """``kubectl exec``: the command, and which of the process's streams the client wants."""

    command: tuple[str, ...]
    tty: bool = False
    """Run on a terminal (stdout and stderr are then one stream, sent as stdout)."""
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True, kw_only=True)
class AttachOptions:
    """``kubectl attach``: which of the container's process's streams the client joins."""

    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class ProcessOutput:
    """A piece of an exec'd or attached process's output."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class ProcessExit:
    """The process ended: its code as the kubelet reports it (128 + signal when killed,
    126/127 for a command that could not run, ``message`` saying why)."""

    code: int
    message: str = ""


class ProcessIO(Protocol):
    """An exec'd or attached process: input one way, output and its exit the other. One task
    may ``receive`` while others ``write`` and ``resize``. Each call waits while the other
    side cannot take more (nothing is buffered without bound); a broken stream raises
    ``ContainerError``."""

    async def write(self, data: bytes) -> None:
        """Bytes for the process's stdin."""
        ...

    async def close_input(self) -> None:
        """The client closed stdin (on a terminal: as ^D would)."""
        ...

    async def resize(self, width: int, height: int) -> None:
        """The client's terminal is now ``width`` columns by ``height`` rows."""
        ...

    async def receive(self) -> ProcessOutput | ProcessExit:
        """The next piece of output, or the exit (again on every later call)."""
        ...


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


@dataclass(frozen=True)
class Interrupted:
    """The backend took the instance's machine back for now (an interruptible instance
    outbid): it does not serve, through no fault of the container, and may come back. The
    pod shows the ``DisruptionTarget`` condition and is not Ready until it runs again.
    ``since`` is when it stopped serving (RFC 3339, wall clock)."""

    reason: str
    message: str
    since: str


@dataclass(frozen=True)
class Preempted:
    """An interrupted instance the pod's policy gives up on (``Interrupted`` too long): the
    supervisor releases it and buys a new one at once, whatever ``restartPolicy``, and with
    no crash backoff: the container did not fail, its machine was taken. Counted as a
    restart, as the container starts anew."""

    reason: str
    message: str


@dataclass(frozen=True)
class Processes:
    """What the runtime reports of the pod's processes: its init containers in order, then
    its container. ``finished``: no process will run again (``restartPolicy``, or the pod
    was evicted), so the pod's phase is final."""

    init_containers: tuple[ProcessState, ...]
    container: ProcessState
    initialized: bool
    finished: bool = False
    reason: str = ""
    """Why the pod finished when it is not its container's exit (``Evicted``)."""
    message: str = ""
    events: tuple[ProcessEvent, ...] = ()
    """What happened to the containers since the previous report (each reported once),
    for the pod's Events."""


Observation = Booting | Running | Interrupted | Exited | MachineFailed | Lost | Preempted
Ended = Exited | MachineFailed | Lost | Preempted
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
        container: str | None = None,
        init: bool = False,
    ) -> None:
        """Record an Event on the pod, and log it (as ``log_as``, else ``reason``);
        ``container`` names the container it is about (``involvedObject.fieldPath``,
        ``spec.containers{name}``, or ``spec.initContainers{name}`` with ``init``)."""
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

    async def logs(self, pod: Pod, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The output of ``container`` (the one ``check`` placed) under ``options``, as
        chunks of whole lines.

        Awaiting it does the first fetch, so that a ``ContainerError`` is raised before the
        response starts; the iterator then ends when the output is complete (or, with
        ``follow``, when the container ends). ``vk_trio.node.logbook`` does the slicing and
        following for a provider that can only fetch full snapshots.
        """
        ...

    def processes(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Processes, None]:
        """For a ``Placement`` with ``runtime``: the pod's processes on ``instance``, now and
        on every change. Started once the instance runs; it hands the runtime the pod (its
        files, its env, its processes) first. It ends when the instance stops serving, and
        reconnects by itself through short losses of the runtime's link."""
        ...

    async def restart(self, pod: Pod, message: str) -> None:
        """For a ``Placement`` with ``runtime``: restart the container's process in place
        (a liveness probe the node runs failed; ``message`` says how). Raises ``VkError``
        when the runtime cannot be reached."""
        ...

    async def stop(self, pod: Pod, grace: float) -> None:
        """For a ``Placement`` with ``runtime``: the pod is being deleted; have the runtime
        run each container's ``preStop`` hook and stop its process within ``grace``
        seconds, returning once they ended. ``release`` follows whatever this does: the
        caller bounds its time and ignores its failure (``VkError``)."""
        ...

    async def usage(self, pod: Pod) -> Usage | None:
        """What the pod's running container uses now (as last observed, or asked of the
        instance); None while nothing runs for it."""
        ...

    def exec(
        self, pod: Pod, container: str, options: ExecOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        """Run ``options.command`` in ``container`` (the one ``check`` placed); leaving the
        context kills it if it still runs. Entering raises ``ContainerError`` when it cannot
        start (``NotSupported``, ``NotReady``, ``ProviderUnavailable``); a command that is
        not found starts and exits 126/127 with the reason as its message."""
        ...

    def attach(
        self, pod: Pod, container: str, options: AttachOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        """Join the container's running process (its output from now on, its stdin when the
        spec gives it one); its exit ends the stream. Leaving detaches."""
        ...

    def port_forward(
        self, pod: Pod, port: int
    ) -> AbstractAsyncContextManager[trio.abc.HalfCloseableStream]:
        """One TCP connection to ``port`` on the pod's own loopback, published or not.
        Entering raises ``ContainerError`` when it cannot be made (nothing listens there:
        ``NotReady``); leaving closes it."""
        ...
