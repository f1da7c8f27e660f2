"""`vk-trio bench` itself, small: every process real, two nodes sharing the pods, every pod
probed by the node against the simulator's listeners."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vk_trio.devtools.bench import APP_READY_AFTER


@pytest.mark.long
def test_bench_spreads_probed_pods_over_two_nodes_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "vk_trio", "bench", "--pods", "6", "--nodes", "2"),
            *("--hold", "2", "--boot-seconds", "1", "--timeout", "120", "--probes"),
            *("--json", str(out), "--run-dir", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [result] = json.loads(out.read_text())
    assert result["nodes"] == 2 and result["pods"] == 6
    assert result["leaked"] == 0 and result["instances_per_pod"] == 1.0
    assert result["destroy_failed_events"] == 0
    # no pod is Ready before its instance booted (1 s) and its app answered 200 (5 s later)
    assert result["all_ready_s"] >= 1 + APP_READY_AFTER
    assert result["all_ready_s"] > result["all_running_s"]
    assert result["ready_after_hold"] == 6
    assert 0 < result["lease_renewal_gap_max_s"] < 15
    assert result["loop_stall_hold"]["samples"] >= 1
    assert result["gc_pauses"]["gen0"]["count"] > 0
    assert "2 nodes" in done.stdout
    logs = {path.name for path in (tmp_path / "run" / "pods-6").iterdir()}
    assert {"vk-bench-0.log", "vk-bench-1.log"} <= logs


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_bench_exec_streams_through_the_real_processes(tmp_path: Path) -> None:
    """``--exec``: kubectl through the stand-in's proxy to the node's kubelet API and over
    the link to a pod under the agent; every session's output complete."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "vk_trio", "bench", "--exec", "3", "--boot-seconds", "1"),
            *("--timeout", "120", "--json", str(out), "--run-dir", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [result] = json.loads(out.read_text())
    assert result["sessions"] == 3 and result["exec_failures"] == []
    assert result["exec_true_median_ms"] > 0 and result["port_forward_mb_s"] > 0
    assert result["loop_stall"]["samples"] >= 1
    assert result["loop_turn_cpu"]["max_s"] <= result["loop_stall"]["max_s"] + 0.05
    assert "node loop stall per second" in done.stdout
