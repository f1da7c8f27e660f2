"""`vk-trio bench --agent`, small: two pods under real agents in real sandboxes, every number
of the table present and plausible for what was measured (nothing here is a fixed value)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BOOT_SECONDS = 1.0


@pytest.mark.long
def test_the_agent_bench_measures_two_linked_agents_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "vk_trio", "bench", "--agent", "--pods", "2"),
            *("--hold", "3", "--boot-seconds", str(BOOT_SECONDS), "--timeout", "60"),
            *("--json", str(out), "--run-dir", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [r] = json.loads(out.read_text())
    assert r["pods"] == 2 and r["leaked"] == 0 and r["instances_per_pod"] == 1.0
    # every pod timed from its instance's process to its container running under the agent:
    # at least the agent's start, at most the whole ramp
    assert r["instance_running_to_started_count"] == 2
    assert 0 < r["instance_running_to_started_p50_s"] <= r["instance_running_to_started_p95_s"]
    assert r["instance_running_to_started_max_s"] < r["all_started_s"]
    assert r["created_to_started_p50_s"] > BOOT_SECONDS + r["instance_running_to_started_p50_s"] / 2
    split = [r[k] for k in r if k.startswith("split_")]
    assert len(split) == 3 and all(s is not None and s >= 0 for s in split)
    # two agents found inside the sandboxes, each a Python process of some tens of MB
    assert r["agents_found"] == 2
    assert 10 < r["agent_rss_p50_mb"] <= r["agent_rss_max_mb"] < 500
    assert 0 < r["agent_pss_p50_mb"] <= r["agent_rss_max_mb"]  # shared pages split in two
    assert r["agent_cpu_start_s"] > 0 and r["agent_cores_idle"] >= 0
    assert "Python" in r["agent"] and "not the static binary" in r["agent"]
    # the node's before/after and the extrapolation follow from them
    assert 20 < r["node_rss_0_mb"] < 1000 and 20 < r["node_rss_n_mb"] < 1000
    per_agent_mb = (r["node_rss_n_mb"] - r["node_rss_0_mb"]) / 2
    assert abs(r["node_rss_per_agent_kb"] / 1024 - per_agent_mb) < 0.1
    expected = r["node_rss_0_mb"] + r["node_rss_per_agent_kb"] * 1000 / 1024
    assert abs(r["extrapolated_node_rss_mb"] - expected) < 0.2
    assert r["node_cores_0"] >= 0 and r["node_cores_n"] >= 0
    assert "instance running → container running" in done.stdout
    assert "extrapolated" in done.stdout and "not the static binary" in done.stdout
