"""An instance taken away for a while (``Interrupted``: outbid), on a ``FakeProvider`` and fake
time: the pod shows ``DisruptionTarget`` since it stopped and is not Ready; it turns Ready
again (the condition False) when the instance comes back; a ``Preempted`` instance is replaced
at once, without crash backoff and whatever ``restartPolicy``; a ``Lost`` one follows
``restartPolicy`` with the condition still True (what a Job's ``podFailurePolicy`` matches).
"""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import MockClock

from tests.node.conftest import Harness, phase, restarts
from tests.node.fakes import FakeProvider, running
from vk_trio.node.provider import Interrupted, Lost, Preempted

SINCE = "2026-01-02T03:04:05Z"
OUTBID = Interrupted("VastOutbid", "instance i1 outbid", SINCE)


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = pod.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def ready(pod: dict[str, Any]) -> bool:
    found = condition(pod, "Ready")
    return found is not None and found["status"] == "True"


def disrupted(pod: dict[str, Any]) -> bool:
    found = condition(pod, "DisruptionTarget")
    return found is not None and found["status"] == "True"


async def test_an_interrupted_pod_is_not_ready_until_its_instance_runs_again(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [[(0.0, running()), (60.0, OUTBID), (300.0, running())]]
    harness.create("p")
    await harness.until("p", ready)
    pod = await harness.until("p", disrupted)
    target = condition(pod, "DisruptionTarget")
    assert target == {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "VastOutbid",
        "message": "instance i1 outbid",
        "lastTransitionTime": SINCE,
        "observedGeneration": 1,
    }
    assert not ready(pod)
    assert condition(pod, "ContainersReady")["status"] == "False"  # type: ignore[index]
    assert phase(pod) == "Running"
    assert harness.reasons("p").count("VastOutbid") == 1
    pod = await harness.until("p", ready)
    after = condition(pod, "DisruptionTarget")
    assert after is not None
    assert after["status"] == "False"
    assert after["reason"] == "InstanceRunning"
    assert restarts(pod) == 0
    assert provider.count == 1  # the same instance, resumed


async def test_a_preempted_instance_is_replaced_at_once_even_with_restart_policy_never(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [
        [(0.0, running()), (60.0, OUTBID), (600.0, Preempted("Outbid", "outbid too long"))],
        [(0.0, running())],
    ]
    harness.create("p", restartPolicy="Never")
    pod = await harness.until("p", lambda p: provider.count == 2 and ready(p))
    assert restarts(pod) == 1
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["reason"] == "Outbid"
    assert condition(pod, "DisruptionTarget")["status"] == "False"  # type: ignore[index]
    acquired = provider.times("acquire", "p")
    released = provider.times("release", "p")
    assert acquired[1] - released[0] < 1.0  # no CrashLoopBackOff before the new instance
    assert "BackOff" not in harness.reasons("p")


async def test_a_lost_interrupted_pod_fails_with_its_disruption_shown(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [[(0.0, running()), (60.0, OUTBID), (600.0, Lost("Outbid", "gone"))]]
    harness.create("p", restartPolicy="Never")
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    assert disrupted(pod)
    assert provider.count == 1


async def test_a_restarted_node_keeps_the_disruption_and_its_time(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [[(0.0, running()), (60.0, OUTBID)], [(0.0, OUTBID)]]
    created = harness.create("p")
    await harness.until("p", disrupted)
    provider.adoptable[created["metadata"]["uid"]] = "i1"  # what the next process finds
    await harness.restart()
    await trio.sleep(600)
    pod = harness.pod("p")
    assert pod is not None and disrupted(pod)
    assert condition(pod, "DisruptionTarget")["lastTransitionTime"] == SINCE  # type: ignore[index]
    assert len(provider.times("adopt", "p")) == 2
    said = [e.get("count", 1) for e in harness.events("p") if e["reason"] == "VastOutbid"]
    assert sum(said) == 1  # said once, not once per process
