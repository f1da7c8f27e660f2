"""One pod count's run: its processes and what the bench saw of its pods and Leases."""

from __future__ import annotations

import argparse
from pathlib import Path

from vk_trio.devtools.bench.processes import ChildFailed, Popen, cpu_seconds, memory_kb
from vk_trio.devtools.bench.workload import node_names


class BenchRun:
    """The processes and clients of one pod count's run, and what was seen."""

    def __init__(self, pods: int, args: argparse.Namespace, folder: Path) -> None:
        self.pods = pods
        self.args = args
        self.nodes = node_names(args.nodes)
        self.folder = folder
        self.children: dict[str, Popen] = {}
        self.posted: dict[str, float] = {}
        """Pod name → wall time its create was answered (it is bound from birth)."""
        self.uids: dict[str, str] = {}
        self.running: dict[str, float] = {}
        """Pod name → wall time the bench first saw it Running."""
        self.ready: dict[str, float] = {}
        """Pod name → wall time the bench first saw it Ready."""
        self.started: dict[str, float] = {}
        """Pod name → wall time the bench first saw its container running (under the agent:
        the agent's PodState, relayed by the node to the pod's status)."""
        self.renewals: dict[str, list[float]] = {node: [] for node in self.nodes}
        """Node → wall times at which the bench saw its Lease renewed, while holding."""
        self.present: set[str] = set()
        self.kube_calls_by_bench = 0

    def cpu(self) -> dict[str, float]:
        """CPU-seconds by process, every node's added up under "node"."""
        used: dict[str, float] = {}
        for name, process in self.children.items():
            key = "node" if name.startswith("node") else name
            used[key] = used.get(key, 0.0) + cpu_seconds(process.pid)
        return used

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the node processes, added up."""
        sizes = [memory_kb(p.pid) for n, p in self.children.items() if n.startswith("node")]
        return sum(rss for rss, _ in sizes), sum(peak for _, peak in sizes)

    def check(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                raise ChildFailed(f"{name} exited with status {process.returncode}")
