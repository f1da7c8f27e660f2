"""The kubelet's rules on fake time, against a ``FakeProvider``: restartPolicy, the
CrashLoopBackOff schedule and its reset, phases that never go back, teardown that retries
until the provider has released everything, deletion mid-acquire, refused pods, adoption
after a restart, and the review defects (teardown guarded, unknown exit is not success).

Every time asserted is virtual and exact up to the stand-in's round trips (a few ms): the
schedule is the production one (15 s first backoff, doubling, 300 s cap, 10 min reset).
"""

from __future__ import annotations

import itertools
import math

import msgspec
import pytest
import trio
from trio.testing import MockClock

from tests.node.conftest import Harness, Obj, container, phase, restarts, waiting
from tests.node.fakes import INVALID, FakeProvider, Run, running
from vk_trio.kube.models import Pod
from vk_trio.node.provider import Booting, Exited, Lost, MachineFailed
from vk_trio.node.status import PodView, status_patch

SLACK = 1.0
"""Virtual seconds of tolerance: each step costs a few real round trips to the stand-in."""


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize(
    ("policy", "code", "restarted", "final"),
    [
        ("Always", 0, True, None),
        ("Always", 3, True, None),
        ("OnFailure", 0, False, "Succeeded"),
        ("OnFailure", 3, True, None),
        ("Never", 0, False, "Succeeded"),
        ("Never", 3, False, "Failed"),
    ],
    ids=["always-ok", "always-error", "onfailure-ok", "onfailure-error", "never-ok", "never-error"],
)
async def test_restart_policy(
    jumpy_clock: MockClock,
    harness: Harness,
    provider: FakeProvider,
    policy: str,
    code: int,
    restarted: bool,
    final: str | None,
) -> None:
    provider.runs["p"] = [[(0.0, running()), (60.0, Exited(code, "done"))]]
    harness.create("p", restartPolicy=policy)
    if restarted:
        pod = await harness.until("p", lambda p: restarts(p) == 1)
        assert waiting(pod) == "CrashLoopBackOff"
        assert phase(pod) == "Running"  # a restarting container does not send the pod back
        terminated = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert terminated["exitCode"] == code
        await harness.until("p", lambda p: provider.count == 2)
    else:
        pod = await harness.until("p", lambda p: phase(p) == final)
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == code
        # kubectl describe shows these: never year 1, and the instance that ran it
        assert terminated["startedAt"] <= terminated["finishedAt"]
        assert container(pod)["containerID"] == "fake://instance"
        assert container(pod)["imageID"] == "busybox"
        await trio.sleep(1800)  # nothing more happens: no second instance
        assert len(provider.times("acquire", "p")) == 1
    assert provider.billing() == (1 if restarted else 0)  # the ended instance was released


async def test_crash_loop_backoff_doubles_to_its_cap_and_resets_after_a_long_run(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    crash: Run = [(0.0, running()), (1.0, Exited(1, "boom"))]
    long_run: Run = [(0.0, running()), (700.0, Exited(1, "boom after a long run"))]
    provider.runs["p"] = [crash] * 7 + [long_run, crash, crash]
    harness.create("p")
    await harness.until("p", lambda p: len(provider.times("acquire", "p")) == 11, within=10**5)
    waits = [gap - 1.0 for gap in gaps(provider.times("acquire", "p"))]
    # 15 s doubling to the 300 s cap; the 700 s run resets it: 15 again after it, then 30, 60.
    expected = [15, 30, 60, 120, 240, 300, 300, 700 - 1 + 15, 30, 60]
    assert waits == pytest.approx(expected, abs=SLACK)
    pod = harness.pod("p")
    assert pod is not None and restarts(pod) == 10


async def test_machine_failures_are_retried_then_blame_the_container(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    failed: Run = [(5.0, MachineFailed("BootTimeout", "never started"))]
    provider.runs["p"] = [failed, failed, failed]
    harness.create("p", restartPolicy="Never")
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert "3 machines" in terminated["message"]
    assert len(provider.times("acquire", "p")) == 3
    assert gaps(provider.times("acquire", "p")) == pytest.approx([5, 5], abs=SLACK)  # no backoff
    assert harness.reasons("p").count("BootTimeout") == 1  # aggregated: one Event, count 3
    assert provider.billing() == 0


async def test_an_unknown_exit_code_is_not_success(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    """Review defect 4: an exit Vast does not report must never show Completed/Succeeded."""
    provider.runs["p"] = [[(0.0, running()), (10.0, Exited(None, "container is gone"))]]
    harness.create("p", restartPolicy="OnFailure")
    pod = await harness.until("p", lambda p: restarts(p) == 1)  # OnFailure restarts it
    terminated = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert terminated["reason"] == "ContainerStatusUnknown"
    assert terminated["exitCode"] != 0
    assert "container is gone" in terminated["message"]


async def test_phase_never_goes_back(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [
        [(0.0, running()), (10.0, Booting("rebooting")), (10.0, Exited(2, "crash"))],
        [(30.0, Booting("instance loading")), (30.0, running())],
    ]
    harness.create("p")
    seen: list[str | None] = []

    def record(sim: object) -> bool:
        pod = harness.pod("p")
        if pod is not None and (not seen or phase(pod) != seen[-1]):
            seen.append(phase(pod))
        return len(provider.times("follow", "p")) == 2 and pod is not None and restarts(pod) == 1

    await harness.sim.wait_until(record)
    pod = await harness.until("p", lambda p: bool(container(p).get("ready")))
    assert phase(pod) == "Running"
    assert [p for p in seen if p is not None] in (["Pending", "Running"], ["Running"])


async def test_teardown_retries_a_failing_release_and_says_why(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p")
    await harness.until("p", lambda p: phase(p) == "Running")
    provider.release_failures = 2
    harness.delete("p")
    await harness.gone("p")
    assert gaps(provider.times("release", "p")) == pytest.approx([15, 30], abs=SLACK)
    assert provider.billing() == 0
    [event] = [e for e in harness.sim.list("events", "default") if e["reason"] == "DestroyFailed"]
    assert event["count"] == 2
    assert "the backend said no" in event["message"]


async def test_a_bug_in_teardown_never_reaches_the_node(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    """Review defect 2: a non-VkError in teardown is retried; other pods carry on."""
    harness.create("a")
    harness.create("b")
    await harness.until("a", lambda p: phase(p) == "Running")
    await harness.until("b", lambda p: phase(p) == "Running")
    provider.release_failures, provider.release_error = 1, KeyError
    harness.delete("a")
    await harness.gone("a")
    assert provider.times("release", "a")  # retried after the KeyError
    pod = harness.pod("b")
    assert pod is not None and phase(pod) == "Running"
    assert harness.dispatcher is not None
    assert "b" in {h.pod.metadata.name for h in harness.dispatcher.handles.values()}
    assert "KeyError" in " ".join(e["message"] for e in harness.events("a"))


async def test_deleting_a_pod_while_it_acquires_rents_nothing(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.acquire_seconds = math.inf
    harness.create("p")
    await harness.until("p", lambda p: waiting(p) == "SearchingOffers")
    harness.delete("p")
    await harness.gone("p")
    assert provider.times("release", "p")  # still released: a buy may have been in flight
    assert provider.billing() == 0


async def test_daemonset_and_mirror_pods_are_refused(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-1"}
    harness.sim.create(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-1"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "main", "image": "busybox"}]},
                },
            },
        }
    )
    harness.create("ds", metadata={"ownerReferences": [owner]})
    harness.create("mirror", metadata={"annotations": {"kubernetes.io/config.mirror": "x"}})
    for name in ("ds", "mirror"):
        pod = await harness.until(name, lambda p: waiting(p) == "NotSupportedOnVirtualNode")
        assert phase(pod) == "Pending"
    assert not provider.times("acquire", "ds") and not provider.times("acquire", "mirror")


async def test_an_invalid_pod_waits_for_an_edit_and_says_so_once(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p", metadata={"annotations": {INVALID: "vast.ai/price-max: bad"}})
    pod = await harness.until("p", lambda p: waiting(p) == "InvalidAnnotation")
    assert (
        "vast.ai/price-max: bad"
        in pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    )
    harness.sim.patch("pods", "default", "p", {"metadata": {"labels": {"unrelated": "edit"}}})
    await trio.sleep(60)
    [event] = [e for e in harness.events("p") if e["reason"] == "InvalidAnnotation"]
    assert event.get("count", 1) == 1  # said once, not at every edit
    harness.sim.patch("pods", "default", "p", {"metadata": {"annotations": {INVALID: None}}})
    await harness.until("p", lambda p: phase(p) == "Running")


async def test_a_restarted_node_adopts_and_keeps_the_pod_running(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    created = harness.create("p")
    await harness.until("p", lambda p: phase(p) == "Running")
    provider.adoptable[created["metadata"]["uid"]] = "i1"  # what the next process finds
    await harness.restart()
    await trio.sleep(600)
    pod = harness.pod("p")
    assert pod is not None and phase(pod) == "Running" and restarts(pod) == 0
    assert container(pod)["state"].get("running")
    assert len(provider.times("adopt", "p")) == 2
    assert len(provider.times("acquire", "p")) == 1  # nothing bought again
    assert not provider.times("release", "p")  # the stop released nothing


async def test_an_instance_lost_while_away_is_a_restart(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    created_uid = harness.create("p", restartPolicy="Always")["metadata"]["uid"]
    provider.lost.add(created_uid)
    pod = await harness.until("p", lambda p: restarts(p) == 1)
    assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == (
        "InstanceLost"
    )


async def test_a_lost_instance_ends_the_run(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [[(0.0, running()), (5.0, Lost("HostOffline", "offline too long"))]]
    harness.create("p", restartPolicy="Never")
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "HostOffline"
    assert "HostOffline" in harness.reasons("p")


async def test_a_pod_created_with_a_node_name_gets_pod_scheduled(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    """Issue 9 fidelity: the kubelet adds PodScheduled=True when no scheduler did."""
    pod = await harness.until("p", lambda p: phase(p) == "Running") if harness.create("p") else {}
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True"


async def test_a_true_condition_keeps_no_reason_from_its_false_days(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    """Issue 20: the pod was ``ContainersReady=False`` (``ContainersNotReady``) while its
    instance booted; once ready, strategic merge must not keep that stale reason (the
    kubelet clears reason and message when a condition turns True)."""
    harness.create("p")
    await harness.until("p", lambda p: waiting(p) is not None)  # False, with its reason
    pod = await harness.until(
        "p",
        lambda p: any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]
        ),
    )
    for condition in pod["status"]["conditions"]:
        if condition["type"] in ("Ready", "ContainersReady"):
            assert condition["status"] == "True"
            assert "reason" not in condition, condition
            assert "message" not in condition, condition


DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def _deadline_exceeded(pod: Obj) -> bool:
    return phase(pod) == "Failed" and pod["status"].get("reason") == "DeadlineExceeded"


async def test_a_running_pod_past_its_deadline_fails_and_its_instance_goes(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p", activeDeadlineSeconds=20, restartPolicy="Never")
    await harness.until("p", lambda p: phase(p) == "Running")
    started = trio.current_time()
    pod = await harness.until("p", _deadline_exceeded)
    assert trio.current_time() - started == pytest.approx(20, abs=SLACK + 1)  # whole seconds
    assert pod["status"]["message"] == DEADLINE_MESSAGE
    terminated = container(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    [event] = [e for e in harness.events("p") if e["reason"] == "DeadlineExceeded"]
    assert (event["type"], event["message"]) == ("Normal", DEADLINE_MESSAGE)
    await harness.until("p", lambda p: provider.billing() == 0, within=1)
    await trio.sleep(600)  # failed for good: nothing bought again
    assert len(provider.times("acquire", "p")) == 1 and provider.billing() == 0


async def test_a_deadline_that_passes_while_buying_fails_the_pending_pod(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.acquire_seconds = math.inf  # no offer ever matches
    harness.create("p", activeDeadlineSeconds=30)
    pod = await harness.until("p", _deadline_exceeded, within=30 + SLACK + 1)
    assert container(pod)["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert provider.times("release", "p")  # whatever the cancelled buy left is destroyed


async def test_a_shrunk_deadline_is_honoured_from_the_pod_start(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p", activeDeadlineSeconds=3600)
    await harness.until("p", lambda p: phase(p) == "Running")
    started = trio.current_time()
    await trio.sleep(100)
    harness.sim.patch("pods", "default", "p", {"spec": {"activeDeadlineSeconds": 300}})
    await harness.until("p", _deadline_exceeded)
    assert trio.current_time() - started == pytest.approx(300, abs=SLACK + 1)
    assert provider.billing() == 0


async def test_a_deadline_set_below_the_age_fails_the_pod_at_once(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    harness.create("p")
    await harness.until("p", lambda p: phase(p) == "Running")
    await trio.sleep(100)
    harness.sim.patch("pods", "default", "p", {"spec": {"activeDeadlineSeconds": 1}})
    await harness.until("p", _deadline_exceeded, within=SLACK)
    assert provider.billing() == 0


async def test_the_status_says_which_generation_of_the_pod_it_shows(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    """``observedGeneration`` on the status and on every condition the node writes, as
    kubelets since 1.34 write them; an edit of the spec is acknowledged at once."""
    harness.create("p")
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert pod["metadata"]["generation"] == 1
    assert pod["status"]["observedGeneration"] == 1
    assert {c["type"]: c["observedGeneration"] for c in pod["status"]["conditions"]} == {
        "PodScheduled": 1,
        "Initialized": 1,
        "ContainersReady": 1,
        "Ready": 1,
    }
    harness.sim.patch("pods", "default", "p", {"spec": {"activeDeadlineSeconds": 3600}})
    pod = await harness.until("p", lambda p: p["status"].get("observedGeneration") == 2, within=5)
    assert {c["observedGeneration"] for c in pod["status"]["conditions"]} == {2}
    assert phase(pod) == "Running"


def test_a_server_without_pod_generations_gets_no_observed_generation() -> None:
    """Before 1.33 a pod has no ``metadata.generation``: nothing to acknowledge."""
    status = status_patch(Pod(), PodView(), chosen="main")
    assert "observedGeneration" not in status
    assert all("observedGeneration" not in c for c in status["conditions"])


def test_the_containers_status_shows_its_resources() -> None:
    """KEP-1287's ``containerStatuses[].resources``: what the container was given."""
    pod = msgspec.convert(
        {
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "resources": {
                            "requests": {"cpu": "2"},
                            "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
                        },
                    },
                    {"name": "side"},
                ]
            }
        },
        Pod,
    )
    main, side = status_patch(pod, PodView(), chosen="main")["containerStatuses"]
    assert main["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
    }
    assert "resources" not in side
