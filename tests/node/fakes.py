"""A scripted ``Provider`` for the lifecycle and kubelet API tests: the seam faked,
everything else real.

Each pod (by name) gets a list of runs; every ``acquire`` rents a new instance and its
``follow`` plays the next run: ``(seconds, observation)`` steps on the (fake) clock, then,
if the run does not end, the instance keeps running. The fake keeps a ledger (``rented``,
``released``, ``calls``) so a test can assert what would have been paid for.

``outputs`` holds what each pod's container printed (``FakeOutput``: the whole current text,
as Vast hands it out), served by ``logs`` through the real ``LogBook``, and ``usage`` a fixed
measurement of every pod with an output. ``exec`` runs its command as a local process and
``port_forward`` connects to 127.0.0.1 (``local_streams``); ``attach`` runs ``attach_command``
the same way, standing in for the container's own process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import trio

from tests.node.local_streams import local_port, local_process
from vk_trio.errors import TemporaryError
from vk_trio.kube.models import Pod
from vk_trio.node.logbook import LogBook, stream_logs
from vk_trio.node.provider import (
    AttachOptions,
    Ended,
    ExecOptions,
    InvalidPod,
    LogOptions,
    Lost,
    NotReady,
    Observation,
    Placement,
    Processes,
    ProcessIO,
    Progress,
    Provider,
    Running,
    Usage,
)

INVALID = "fake/invalid"
"""A pod annotated with this is refused by ``check`` with the annotation's value."""

Run = list[tuple[float, Observation]]


def running(address: str = "127.0.0.1", endpoints: dict[str, str] | None = None) -> Running:
    return Running(
        address=address,
        endpoints=endpoints or {},
        description=f"running at {address}",
        container_id="fake://instance",
    )


FOLLOW_INTERVAL = 0.1
"""Seconds between log refreshes while a test follows a fake container's output."""

USAGE = Usage(
    cpu_nano_cores=250_000_000,
    memory_bytes=3 * 2**30,
    gpu_utilisation=87.0,
    gpu_name="RTX 4090",
    gpu_memory_bytes=24 * 2**30,
    gpu_memory_used_bytes=20 * 2**30,
)
"""What ``usage`` reports of every pod with an output."""


@dataclass
class FakeOutput:
    """One container's output as a provider would return it: the whole current text."""

    text: str = ""
    previous_text: str | None = None
    waiting: str | None = None
    """Set: there is no instance yet, and this says what the pod waits for."""
    running: bool = True
    fetches: int = 0

    def append(self, *lines: str) -> None:
        self.text += "".join(line + "\n" for line in lines)

    async def fetch(self) -> str:
        self.fetches += 1
        return self.text


@dataclass
class FakeProvider:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    """Pod name → the runs its successive instances play."""
    acquire_seconds: float = 0.0
    """How long each acquire takes (math.inf: it never finds an offer)."""
    release_failures: int = 0
    """The next this-many releases raise (``release_error``) before one succeeds."""
    release_error: type[Exception] = TemporaryError
    adoptable: dict[str, str] = field(default_factory=dict)
    """Pod UID → an instance an earlier process rented (``adopt`` returns it)."""
    lost: set[str] = field(default_factory=set)
    """Pod UIDs whose recorded instance vanished while nobody watched."""
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    """(loop time, operation, pod name) of every call."""
    rented: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Pod UID → instances rented and not released: what would bill."""
    count: int = 0
    outputs: dict[str, FakeOutput] = field(default_factory=dict)
    """Pod name → what its container printed."""
    reports: dict[str, list[tuple[float, Processes]]] = field(default_factory=dict)
    """Pod name → what a runtime inside its instance reports, after how many seconds each;
    a pod named here is placed with ``runtime``."""
    stop_seconds: float = 0.0
    """How long ``stop`` takes (math.inf: the runtime never answers)."""
    stop_error: type[Exception] | None = None
    """``stop`` raises this, after ``stop_seconds``."""
    stopped: list[tuple[str, float]] = field(default_factory=list)
    """(pod name, grace) of every graceful stop that returned."""
    attach_command: list[str] = field(default_factory=lambda: ["cat"])
    """What ``attach`` joins: a local process standing in for the container's own."""
    resizes: list[tuple[int, int]] = field(default_factory=list)
    """Every terminal size an exec or attach was told, in order."""
    _books: dict[str, LogBook] = field(default_factory=dict)

    def times(self, operation: str, pod: str) -> list[float]:
        return [t for t, op, name in self.calls if op == operation and name == pod]

    def _call(self, operation: str, pod: Pod) -> None:
        self.calls.append((trio.current_time(), operation, pod.metadata.name))

    def check(self, pod: Pod) -> Placement:
        self._call("check", pod)
        problem = pod.metadata.annotations.get(INVALID)
        if problem:
            raise InvalidPod("InvalidAnnotation", problem)
        runtime = pod.metadata.name in self.reports
        return Placement(pod.spec.containers[0].name, {}, runtime=runtime)

    async def adopt(self, pod: Pod, progress: Progress) -> str | Lost | None:
        self._call("adopt", pod)
        await trio.lowlevel.checkpoint()
        if pod.uid in self.lost:
            return Lost("InstanceLost", "the instance vanished while vk-trio was away")
        instance = self.adoptable.get(pod.uid)
        if instance is not None:
            self.rented[pod.uid].add(instance)
        return instance

    async def acquire(self, pod: Pod, progress: Progress) -> str:
        self._call("acquire", pod)
        await progress.waiting("SearchingOffers", "looking")
        await trio.sleep(self.acquire_seconds)
        self.count += 1
        instance = f"i{self.count}"
        self.rented[pod.uid].add(instance)
        return instance

    async def follow(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Observation, None]:
        self._call("follow", pod)
        runs = self.runs.get(pod.metadata.name, [])
        run = runs.pop(0) if runs else [(0.0, running())]
        for seconds, observed in run:
            await trio.sleep(seconds)
            yield observed
            if isinstance(observed, Ended):
                return
        await trio.sleep_forever()

    async def processes(
        self, pod: Pod, instance: str, progress: Progress
    ) -> AsyncGenerator[Processes, None]:
        self._call("processes", pod)
        for seconds, report in self.reports.get(pod.metadata.name, []):
            await trio.sleep(seconds)
            yield report
        await trio.sleep_forever()

    async def restart(self, pod: Pod, message: str) -> None:
        self._call("restart", pod)
        await trio.lowlevel.checkpoint()

    async def stop(self, pod: Pod, grace: float) -> None:
        self._call("stop", pod)
        await trio.sleep(self.stop_seconds)
        if self.stop_error is not None:
            raise self.stop_error("the runtime cannot be reached")
        self.stopped.append((pod.metadata.name, grace))

    async def release(self, pod: Pod, *, keep: str | None = None) -> int:
        self._call("release", pod)
        await trio.lowlevel.checkpoint()
        if self.release_failures:
            self.release_failures -= 1
            raise self.release_error("the backend said no")
        gone = {i for i in self.rented[pod.uid] if i != keep}
        self.rented[pod.uid] -= gone
        return len(gone)

    def forget(self, pod: Pod) -> None:
        self._call("forget", pod)

    async def logs(self, pod: Pod, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        name = pod.metadata.name
        output = self.outputs[name]
        if output.waiting is not None:
            raise NotReady(
                f'container "{container}" in pod "{name}" is waiting to start: {output.waiting}'
            )
        if options.previous:
            if output.previous_text is None:
                raise NotReady(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            previous = LogBook(_constant(output.previous_text))
            await previous.refresh()
            return stream_logs(previous, options)
        book = self._books.setdefault(name, LogBook(output.fetch))
        await book.refresh(max_age=FOLLOW_INTERVAL)
        return stream_logs(book, options, alive=lambda: output.running, interval=FOLLOW_INTERVAL)

    async def usage(self, pod: Pod) -> Usage | None:
        await trio.lowlevel.checkpoint()
        return USAGE if pod.metadata.name in self.outputs else None

    def exec(
        self, pod: Pod, container: str, options: ExecOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        self._call("exec", pod)
        return local_process(list(options.command), stdin=options.stdin, resizes=self.resizes)

    def attach(
        self, pod: Pod, container: str, options: AttachOptions
    ) -> AbstractAsyncContextManager[ProcessIO]:
        self._call("attach", pod)
        return local_process(self.attach_command, stdin=options.stdin, resizes=self.resizes)

    def port_forward(
        self, pod: Pod, port: int
    ) -> AbstractAsyncContextManager[trio.abc.HalfCloseableStream]:
        self._call("port_forward", pod)
        return local_port(port)

    def billing(self) -> int:
        """Instances rented and never released."""
        return sum(len(instances) for instances in self.rented.values())


def _typed(provider: FakeProvider) -> Provider:
    return provider  # mypy checks that the fake really is a Provider


def _constant(text: str) -> Callable[[], Awaitable[str]]:
    async def fetch() -> str:
        return text

    return fetch


__all__ = ["INVALID", "FakeOutput", "FakeProvider", "Run", "running"]
