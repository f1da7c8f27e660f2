"""``vk-trio spend`` against the Kubernetes stand-in: spend by namespace and by pod over a
period, read from the pods' ``vast.ai/cost`` and their own times, with the kubeconfig
loading of ``vk-trio run``."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from vk_trio import cli, spend
from vk_trio.devtools.sim.kube import KubeSim


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(
    namespace: str, name: str, cost: str | None, started: datetime, ended: datetime | None
) -> dict[str, Any]:
    annotations = {"vast.ai/cost": cost} if cost is not None else {}
    status: dict[str, Any] = {"phase": "Running", "startTime": _stamp(started)}
    if ended is not None:
        status["phase"] = "Succeeded"
        status["containerStatuses"] = [
            {"name": "app", "state": {"terminated": {"exitCode": 0, "finishedAt": _stamp(ended)}}}
        ]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"nodeName": "vk-node", "containers": [{"name": "app", "image": "x"}]},
        "status": status,
    }


@pytest.fixture
def cluster(kube_sim: KubeSim) -> KubeSim:
    """Pods timed back from now (the report's period ends at the time it runs)."""
    now = datetime.now(UTC)
    for namespace in ("team-a", "team-b"):
        kube_sim.create({"kind": "Namespace", "metadata": {"name": namespace}})
    pods = [
        _pod("team-a", "train", "3.000000", now - timedelta(hours=30), now - timedelta(hours=6)),
        _pod("team-a", "serve", "1.500000", now - timedelta(hours=2), None),
        _pod("team-b", "old", "9.000000", now - timedelta(days=10), now - timedelta(days=9)),
        _pod("team-b", "cpu-only", None, now - timedelta(hours=1), None),
    ]
    for pod in pods:
        created = kube_sim.create(pod)
        kube_sim.patch(
            "pods",
            pod["metadata"]["namespace"],
            created["metadata"]["name"],
            {"status": pod["status"]},
            subresource="status",
        )
    return kube_sim


async def test_spend_by_namespace_and_pod_over_a_day(cluster: KubeSim, kubeconfig: Path) -> None:
    args = cli.build_parser().parse_args(
        ["spend", "--since", "24h", "--kubeconfig", str(kubeconfig)]
    )
    out = io.StringIO()
    await spend.run(args, out)
    rows = [line.split() for line in out.getvalue().splitlines()]
    # train ran 24 h, 18 of them in the last day: 3/4 of $3; serve entirely; old not at all
    assert ["team-a", "2", "3.7500"] in rows and ["TOTAL", "2", "3.7500"] in rows
    assert [row[:3] for row in rows if len(row) == 5][1:] == [
        ["team-a", "train", "2.2500"],
        ["team-a", "serve", "1.5000"],
    ]
    assert not [row for row in rows if "old" in row or "cpu-only" in row]


async def test_spend_as_json_for_one_namespace(cluster: KubeSim, kubeconfig: Path) -> None:
    args = cli.build_parser().parse_args(
        ["spend", "--since", "2w", "-n", "team-b", "-o", "json", "--kubeconfig", str(kubeconfig)]
    )
    out = io.StringIO()
    await spend.run(args, out)
    pods = msgspec.json.decode(out.getvalue())["pods"]
    assert pods == [{"namespace": "team-b", "pod": "old", "usd": 9.0, "usd_total": 9.0}]


@pytest.mark.parametrize("period", ["", "7", "3x", "d7"])
def test_a_period_that_is_not_one_is_refused(period: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        spend.parse_period(period)


def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vk_trio", "spend", "--kubeconfig", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "vk-trio spend: cannot read the cluster" in result.stderr
