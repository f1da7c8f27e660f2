"""The chaos soak (``python -m tests.chaos``): the short run, and proof that it can fail.

The soak test runs the real harness as a process (two simulators and the node as processes of
their own, the node SIGKILLed three times) and checks its JSON: every invariant held, and the
chaos really happened (kills, instances, faults answered by the simulator). The audit tests
feed synthetic ledgers with known violations, so a green soak means something.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from tests.chaos.audit import LedgerRow, PodObject, audit, exposed, restarted_in_place
from tests.chaos.plan import node_flags, parse_args
from tests.chaos.report import Report, vast_numbers

NODE = "n"


def label(uid: str) -> str:
    return f"vk-trio/{NODE}/chaos/pod-{uid}/{uid}"


def row(
    instance_id: int,
    uid: str,
    created: float,
    destroyed: float | None = None,
    *,
    price: float = 0.25,
    label_: str | None = None,
) -> LedgerRow:
    return LedgerRow(
        id=instance_id,
        label=label_ or label(uid),
        dph_total=price,
        created_at=created,
        destroyed_at=destroyed,
    )


def pod(
    uid: str,
    phase: str | None = "Running",
    *,
    waiting: str | None = None,
    reconciled: bool = True,
    deleting: bool = False,
    message: str | None = None,
    restarts: int = 0,
) -> PodObject:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    container = {"name": "app", "state": state, "restartCount": restarts}
    return msgspec.convert(
        {
            "metadata": {
                "name": f"pod-{uid}",
                "uid": uid,
                **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}),
            },
            "status": {
                "phase": phase,
                **({"message": message} if message else {}),
                **({"containerStatuses": [container]} if reconciled else {}),
            },
        },
        PodObject,
    )


CAPS = {uid: 0.30 for uid in "abcdefgh"}


def test_a_clean_history_has_no_violations() -> None:
    ledger = [
        row(1, "a", 0.0, 5.0),  # replaced after an exit: one after the other, never both
        row(2, "a", 5.0),
        row(3, "b", 1.0, 2.0),  # b was deleted and its instance destroyed
        row(4, "c", 1.0, 9.0),  # c finished and freed its GPU
    ]
    pods = [
        pod("a"),
        pod("c", "Failed", waiting=None),
        pod("d", "Pending", waiting="NoMatchingOffers"),
    ]
    findings = audit(ledger, pods, CAPS, node=NODE)
    assert findings.instances_created == 4
    assert findings.invariants() == dict.fromkeys(findings.invariants(), 0)
    assert findings.settled


def test_the_audit_counts_every_kind_of_violation() -> None:
    ledger = [
        row(1, "a", 0.0),  # a: Running on this one
        row(2, "a", 3.0, 4.0),  # ... and another bought while it lived: a double buy
        row(3, "b", 0.0),  # b was deleted: its instance still bills (leak)
        row(4, "c", 0.0, price=0.31),  # c: above its 0.30 cap
        row(5, "x", 0.0, label_="someone-else"),  # not ours to keep: a leak too
        row(6, "e", 0.0),  # e ended Failed, its instance still bills (leak)
    ]
    pods = [
        pod("a"),
        pod("c"),
        pod("d", deleting=True),  # stuck Terminating
        pod("e", "Failed"),
        pod("f", reconciled=False, phase="Pending"),  # the node never wrote a status
        pod("g", "Pending", waiting="Provisioning"),  # not converged
        pod("h"),  # Running, but nothing bills for it: a stale status
    ]
    findings = audit(ledger, pods, CAPS, node=NODE)
    assert findings.invariants() == {
        "instances_leaked": 3,
        "pods_double_bought": 1,
        "instances_above_cap": 1,
        "pods_stuck_terminating": 1,
        "pods_never_reconciled": 1,
        "pods_not_converged": 2,
        "secrets_exposed": 0,  # scanned at the end of a soak, from its outputs (see below)
        "secrets_sent_to_vast": 0,  # likewise, from the simulator's create requests
        "agent_processes_restarted": 0,  # no pod here runs under the agent (see below)
    }
    assert findings.leaked == [3, 5, 6]
    assert findings.double_bought == ["a"]
    assert findings.above_cap == [4]
    assert findings.stuck_terminating == ["pod-d"]
    assert findings.never_reconciled == ["pod-f"]
    assert findings.not_converged == [
        "pod-g: Pending (Provisioning)",
        "pod-h: Running without an instance",
    ]
    assert not findings.settled


def test_an_agent_pod_restarted_in_place_is_a_violation() -> None:
    ledger = [row(1, uid, 0.0) for uid in "abcd"]
    pods = [
        pod("a", restarts=1),
        pod("b", restarts=2),  # the node counted new instances: not the agent's doing
        pod("c"),
        pod("d", restarts=3),  # not under the agent: none of this audit's business
        pod("e", waiting="CrashLoopBackOff"),  # not judged here, but not converged
        pod("f", "Failed"),
    ]
    findings = audit(ledger, pods, CAPS, node=NODE, agent_pods=set("abcef"))
    assert findings.agent_running == {"a": "pod-a", "b": "pod-b", "c": "pod-c"}
    starts: dict[str, tuple[int | None, int | None]] = {"a": (2, 1), "b": (1, 2)}
    assert restarted_in_place(findings.agent_running, starts) == [  # c: log unread
        "pod-a: started 2 times on instance 1",
        "pod-c: started 0 times on instance None",
    ]
    starts["c"] = (None, 3)  # its instance ended before its log was read: not judged
    assert restarted_in_place(findings.agent_running, starts) == [
        "pod-a: started 2 times on instance 1"
    ]


@pytest.mark.parametrize(
    ("spans", "doubled"),
    [
        ([(0.0, 5.0), (5.0, None)], False),
        ([(0.0, 5.0), (4.9, 6.0)], True),
        ([(0.0, None), (10.0, 11.0)], True),
        ([(0.0, 10.0), (1.0, 2.0), (3.0, 4.0)], True),
        ([(3.0, 4.0), (0.0, 1.0), (1.0, 3.0)], False),
    ],
    ids=["back-to-back", "overlap", "first-never-destroyed", "nested", "unordered-ids"],
)
def test_double_buys_are_overlapping_lifetimes(
    spans: list[tuple[float, float | None]], doubled: bool
) -> None:
    ledger = [row(i, "a", start, end) for i, (start, end) in enumerate(spans)]
    pods = [pod("a")]
    assert audit(ledger, pods, CAPS, node=NODE).double_bought == (["a"] if doubled else [])


def test_vast_numbers_tell_faults_from_calls() -> None:
    stats = {
        "PUT /api/v0/asks/{id}/": 10,
        "PUT /api/v0/asks/{id}/ 404": 2,  # offers taken
        "PUT /api/v0/asks/{id}/ 502": 1,  # a lost create answer
        "GET /api/v1/instances/": 20,
        "GET /api/v1/instances/ 429": 3,
        "DELETE /api/v0/instances/{id}/": 4,
        "DELETE /api/v0/instances/{id}/ 404": 1,  # already gone: not a fault
    }
    calls, errors, faults = vast_numbers(stats)
    assert calls == 34
    assert sum(errors.values()) == 7
    assert faults == {"429": 3, "5xx": 1, "offer_taken": 2}


def test_every_fault_flag_reaches_the_simulator() -> None:
    plan = parse_args(["--lose-create", "0.2", "--stuck-boot", "0.3", "--rate-5xx", "0"])
    assert plan.faults.lose_create_response == 0.2
    assert plan.faults.stuck_loading == 0.3
    assert plan.faults.rate_5xx == 0.0
    assert "--startup-timeout=8.0" in node_flags(plan)


SOAK = [
    *("--pods", "30", "--duration", "60", "--kills", "3", "--seed", "1", "--settle", "45"),
    *("--rate-429", "0.05", "--rate-5xx", "0.05", "--latency", "0.01"),
    *("--lose-create", "0.05", "--offer-taken", "0.05", "--stuck-boot", "0.05"),
    *("--oci-failure", "0.03", "--host-offline", "0.03", "--instance-exit", "0.05"),
]


@pytest.mark.long
def test_the_short_soak_holds_every_invariant() -> None:
    # Not tmp_path: pytest prunes old temporary directories, and a failed soak's logs and
    # ledger are the evidence the product's owner needs. A passing run's are removed.
    run_dir = Path(tempfile.mkdtemp(prefix="vk-chaos-test-"))
    report_path = run_dir / "soak.json"
    run = [*SOAK, "--run-dir", str(run_dir), "--json", str(report_path)]
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", *run],
        capture_output=True,
        text=True,
        timeout=150,
    )
    evidence = f"evidence in {run_dir}\n{result.stdout}{result.stderr[-3000:]}"
    assert result.returncode in (0, 1), evidence  # 2: the soak could not run at all
    report = msgspec.json.decode(report_path.read_bytes(), type=Report)

    assert report.context.kills == 3 and report.context.node_starts == 4
    assert report.instances_created > 0
    assert report.context.pods_deleted > 0 and report.context.pods_force_deleted > 0
    faults = report.context.faults_seen
    assert faults["429"] > 0 and faults["5xx"] > 0, report.context.vast_errors
    assert report.context.outbids > 0 and report.context.node_events.get("VastOutbid"), evidence

    assert report.invariants == dict.fromkeys(report.invariants, 0), evidence
    assert result.returncode == 0 and report.passed, evidence
    shutil.rmtree(run_dir)


def test_a_secret_in_any_output_is_found() -> None:
    texts = {
        "node-0.log": '{"message": "buy_instance", "env": "***"}',
        "node-1.log": '{"message": "create failed: Bearer key-123456"}',
        "events.json": "HF_TOKEN=hf_value_1",
        "pods.json": "{}",
    }
    assert exposed(["key-123456", "hf_value_1", ""], texts) == ["events.json", "node-1.log"]


def test_the_agent_flag_runs_fewer_pods_by_default() -> None:
    assert parse_args(["--agent"]).pods == 10 and parse_args(["--agent"]).agent
    assert parse_args([]).pods == 30 and not parse_args([]).agent
    assert parse_args(["--agent", "--pods", "4"]).pods == 4


@pytest.mark.long
def test_the_short_soak_with_the_agent_holds_every_invariant() -> None:
    """Instances run their process for real (sandboxes), about half the pods under the agent
    with a ConfigMap and a Secret as volumes and a Secret env var; the node is SIGKILLed once
    while they run and must reconnect to their agents, not restart their processes. About
    30 s here (two shared cores): each agent is a Python process started in its sandbox."""
    run_dir = Path(tempfile.mkdtemp(prefix="vk-chaos-agent-"))
    report_path = run_dir / "soak.json"
    run = [
        *("--agent", "--pods", "6", "--duration", "20", "--kills", "1", "--seed", "1"),
        *("--settle", "45", "--run-dir", str(run_dir), "--json", str(report_path)),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", *run], capture_output=True, text=True, timeout=150
    )
    evidence = f"evidence in {run_dir}\n{result.stdout}{result.stderr[-3000:]}"
    assert result.returncode in (0, 1), evidence  # 2: no sandbox here, or a node that crashed
    report = msgspec.json.decode(report_path.read_bytes(), type=Report)
    assert report.context.agent and report.context.kills == 1
    assert report.context.agent_pods > 0 and report.evidence.agent_judged > 0, evidence
    linked = [
        line
        for line in (run_dir / "node-1.log").read_text().splitlines()
        if '"agent linked"' in line
    ]
    assert linked, evidence  # the restarted node linked to the agents it found running
    assert report.invariants == dict.fromkeys(report.invariants, 0), evidence
    assert result.returncode == 0 and report.passed, evidence
    shutil.rmtree(run_dir)


@pytest.mark.long
def test_the_short_soak_with_two_replicas_holds_every_invariant() -> None:
    """The leader is SIGKILLed twice; a standby (or the killed one, back under its name) takes
    over by the election Lease and adopts what the dead one bought: still no double buy, no
    leak. Election timings are scaled down (4/3/0.5 s) so each take-over costs seconds."""
    run_dir = Path(tempfile.mkdtemp(prefix="vk-chaos-replicas-"))
    report_path = run_dir / "soak.json"
    run = [
        *("--pods", "12", "--duration", "25", "--kills", "2", "--replicas", "2", "--seed", "1"),
        *("--settle", "45", "--run-dir", str(run_dir), "--json", str(report_path)),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", *run], capture_output=True, text=True, timeout=150
    )
    evidence = f"evidence in {run_dir}\n{result.stdout}{result.stderr[-3000:]}"
    assert result.returncode in (0, 1), evidence
    report = msgspec.json.decode(report_path.read_bytes(), type=Report)
    assert report.context.replicas == 2
    assert report.context.kills == 2 and report.context.node_starts == 4
    leaders = [
        line
        for log in sorted(run_dir.glob("node-*.log"))
        for line in log.read_text().splitlines()
        if '"became leader"' in line
    ]
    assert len(leaders) >= 3, evidence  # the first leader, then one per kill
    assert report.invariants == dict.fromkeys(report.invariants, 0), evidence
    assert result.returncode == 0 and report.passed, evidence
    shutil.rmtree(run_dir)
