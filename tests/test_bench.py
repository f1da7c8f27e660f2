"""`vk-trio bench` itself, small: every process real, two nodes sharing the pods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_spreads_pods_over_two_nodes_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "vk_trio", "bench", "--pods", "6", "--nodes", "2"),
            *("--hold", "1", "--boot-seconds", "1", "--timeout", "120"),
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
    assert "2 nodes" in done.stdout
    logs = {path.name for path in (tmp_path / "run" / "pods-6").iterdir()}
    assert {"vk-bench-0.log", "vk-bench-1.log"} <= logs
