"""A pod whose instance has a runtime inside (``Placement.runtime``): its reports become the
pod's status. Init containers and ``Initialized``, restarts in place on one instance (no new
instance is bought), the phase once the container first runs, and a finished pod ending the
instance whatever ``restartPolicy``. On fake time, against a ``FakeProvider``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from trio.testing import MockClock

from tests.node.conftest import Harness, container, phase, restarts, waiting
from tests.node.fakes import FakeProvider, running
from vk_trio.errors import TemporaryError
from vk_trio.node.provider import Processes, ProcessEvent, ProcessState
from vk_trio.node.status import Running, Terminated, Waiting
from vk_trio.node.supervisor import STOP_MARGIN

T0 = "2026-12-07T10:00:00Z"
T1 = "2026-12-07T10:00:05Z"
T2 = "2026-12-07T10:00:20Z"


def _report(
    init: ProcessState, main: ProcessState, *, initialized: bool, finished: bool = False
) -> Processes:
    return Processes((init,), main, initialized, finished)


INIT_RUNNING = ProcessState("setup", Running(T0))
INIT_DONE = ProcessState("setup", Terminated(0, "Completed", started_at=T0, finished_at=T1))
WAITING = ProcessState("main", Waiting("PodInitializing"))
EXIT_3 = Terminated(3, "Error", started_at=T1, finished_at=T2)


def _init_containers() -> list[dict[str, object]]:
    return [{"name": "setup", "image": "busybox", "command": ["true"]}]


async def test_init_containers_then_restarts_in_place(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = [
        (1.0, _report(INIT_RUNNING, WAITING, initialized=False)),
        (5.0, _report(INIT_DONE, ProcessState("main", Running(T1)), initialized=True)),
        (
            15.0,
            _report(
                INIT_DONE,
                ProcessState(
                    "main",
                    Waiting("CrashLoopBackOff", "back-off 10s restarting failed container"),
                    last_state=EXIT_3,
                    restart_count=1,
                ),
                initialized=True,
            ),
        ),
    ]
    harness.create("p", initContainers=_init_containers())
    pod = await harness.until("p", lambda p: _init_state(p) == "running")
    assert phase(pod) == "Pending"
    assert _condition(pod, "Initialized") == "False"
    assert waiting(pod) == "PodInitializing"
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert _condition(pod, "Initialized") == "True"
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert container(pod)["state"]["running"]["startedAt"] == T1
    pod = await harness.until("p", lambda p: restarts(p) == 1)
    assert waiting(pod) == "CrashLoopBackOff"
    assert container(pod)["lastState"]["terminated"]["exitCode"] == 3
    assert phase(pod) == "Running"
    assert len(provider.times("acquire", "p")) == 1  # restarted in place: no new instance
    assert provider.billing() == 1


async def test_a_finished_pod_ends_its_instance_whatever_the_restart_policy(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    failed = ProcessState("main", EXIT_3)
    provider.reports["p"] = [(1.0, _report(INIT_DONE, failed, initialized=True, finished=True))]
    harness.create("p", restartPolicy="Always", initContainers=_init_containers())
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    assert container(pod)["state"]["terminated"]["exitCode"] == 3
    await harness.until("p", lambda p: provider.billing() == 0)
    assert len(provider.times("acquire", "p")) == 1


async def test_without_a_runtime_report_the_instance_running_is_not_the_container_running(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = []
    provider.runs["p"] = [[(0.0, running())]]
    harness.create("p")
    pod = await harness.until("p", lambda p: waiting(p) == "ContainerCreating")
    assert phase(pod) == "Pending"
    assert pod["status"]["podIP"] == "127.0.0.1"


def _init_state(pod: dict[str, object]) -> str | None:
    statuses = pod.get("status", {}).get("initContainerStatuses")  # type: ignore[attr-defined]
    if not statuses:
        return None
    return next(iter(statuses[0]["state"]), None)


def _condition(pod: dict[str, object], kind: str) -> str | None:
    for condition in pod["status"]["conditions"]:  # type: ignore[index]
        if condition["type"] == kind:
            return str(condition["status"])
    return None


# -- the runtime's Events, and the graceful stop before the destroy ----------------------------


def _events(*events: tuple[str, bool, str, str]) -> tuple[ProcessEvent, ...]:
    return tuple(
        ProcessEvent(seq, name, init, "Normal", reason, message)
        for seq, (name, init, reason, message) in enumerate(events, start=1)
    )


async def test_the_runtimes_events_name_their_container(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = [
        (
            1.0,
            replace(
                _report(INIT_RUNNING, WAITING, initialized=False),
                events=_events(("setup", True, "Started", "Started container setup")),
            ),
        ),
        (
            1.0,
            replace(
                _report(INIT_DONE, ProcessState("main", Running(T1)), initialized=True),
                events=_events(("main", False, "Created", "Created container: main")),
            ),
        ),
    ]
    harness.create("p", initContainers=_init_containers())
    await harness.until("p", lambda p: phase(p) == "Running")
    found = {e["reason"]: e for e in harness.events("p") if e["reason"] in ("Started", "Created")}
    assert found["Started"]["involvedObject"]["fieldPath"] == "spec.initContainers{setup}"
    assert found["Started"]["message"] == "Started container setup"
    assert found["Created"]["involvedObject"]["fieldPath"] == "spec.containers{main}"
    assert found["Created"]["count"] == 1


def _running_report() -> list[tuple[float, Processes]]:
    return [(1.0, _report(INIT_DONE, ProcessState("main", Running(T1)), initialized=True))]


async def test_a_deleted_pod_is_stopped_gracefully_before_its_instance_is_destroyed(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = _running_report()
    provider.stop_seconds = 4.0
    harness.create("p", initContainers=_init_containers(), terminationGracePeriodSeconds=7)
    await harness.until("p", lambda p: phase(p) == "Running")
    harness.delete("p")  # the deletion's own grace period: 30 s
    await harness.gone("p")
    [stopped] = provider.times("stop", "p")
    [released] = provider.times("release", "p")
    assert released - stopped == pytest.approx(4.0, abs=0.5)
    assert provider.stopped == [("p", 30.0)]
    assert provider.billing() == 0


async def test_a_stop_that_never_answers_does_not_keep_the_instance(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = _running_report()
    provider.stop_seconds = math.inf
    harness.create("p", initContainers=_init_containers())
    await harness.until("p", lambda p: phase(p) == "Running")
    harness.delete("p")
    await harness.gone("p")
    [stopped] = provider.times("stop", "p")
    [released] = provider.times("release", "p")
    assert released - stopped == pytest.approx(30 + STOP_MARGIN, abs=0.5)
    assert provider.billing() == 0


async def test_a_stop_that_fails_does_not_keep_the_instance(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.reports["p"] = _running_report()
    provider.stop_error = TemporaryError
    harness.create("p", initContainers=_init_containers())
    await harness.until("p", lambda p: phase(p) == "Running")
    harness.delete("p")
    await harness.gone("p")
    assert provider.times("stop", "p") and provider.times("release", "p")
    assert provider.billing() == 0


async def test_a_pod_without_a_runtime_is_not_asked_to_stop(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p")
    await harness.until("p", lambda p: phase(p) == "Running")
    harness.delete("p")
    await harness.gone("p")
    assert provider.times("stop", "p") == []
    assert provider.times("release", "p")
