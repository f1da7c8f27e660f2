"""``vk-trio bench``'s table: one column per pod count, one row per measure."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from vk_trio.devtools.bench.agent import EXTRAPOLATE_TO
from vk_trio.devtools.bench.workload import Obj

Row = tuple[str, Callable[[Obj], str]]


def render_table(results: list[Obj], args: argparse.Namespace) -> str:
    """One column per pod count, one row per measure, under a title naming the setup."""
    table = [[name, *(show(r) for r in results)] for name, show in ROWS]
    return "\n".join([_title(args), "", *_aligned(table)])


def _title(args: argparse.Namespace) -> str:
    return (
        f"vk-trio bench: Vast rate limits {'real' if args.real_limits else 'off'}, "
        f"{args.boot_seconds:g} s boots, {args.hold:g} s hold, {os.cpu_count()} CPUs"
        + (f", readiness + liveness probes every {args.probes} s" if args.probes else "")
        + (f", {args.nodes} nodes (CPU and RSS added up)" if args.nodes > 1 else "")
    )


def _aligned(table: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; a rule under the first row (the header)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


# -- cells ----------------------------------------------------------------------------------


def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value}{unit}"


def _field(key: str, unit: str = "") -> Callable[[Obj], str]:
    return lambda r: _cell(r[key], unit)


def _pair(first: str, second: str, unit: str = " s") -> Callable[[Obj], str]:
    return lambda r: f"{_cell(r[first])} / {_cell(r[second])}{unit}"


def _cpu(key: str) -> Callable[[Obj], str]:
    return lambda r: " / ".join(f"{r[key].get(k, 0):g}" for k in ("node", "vast sim", "kube sim"))


def _calls(r: Obj) -> str:
    calls = r["vast_calls_per_min_steady"]
    short = {k.split(" ", 1)[1].split("/api/")[-1]: v for k, v in calls.items()}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(short.items())) or "0"


def _stall(key: str) -> Callable[[Obj], str]:
    def show(r: Obj) -> str:
        s = r[key] or {}
        return f"{s.get('p99_s', 0) * 1000:.0f} / {s.get('max_s', 0) * 1000:.0f} ms"

    return show


def _collections(r: Obj) -> str:
    pauses = r["gc_pauses"] or {}
    return " / ".join(
        f"{pauses[g]['count']}x {pauses[g]['max_s'] * 1000:.0f} ms"
        for g in ("gen0", "gen1", "gen2")
        if g in pauses
    )


def _pacer(r: Obj) -> str:
    wait = r["pacer_create_wait"]
    if not wait or not wait.get("waited_s"):
        return "0" if r["rate_limits"] == "real" else "0 (pacing off)"
    return f"{wait['p50_s']} / {wait['p99_s']} / {wait['max_s']} s"


def _rss(r: Obj) -> str:
    return f"{r['node_rss_idle_mb']} / {r['node_rss_held_mb']} / {r['node_rss_peak_mb']} MB"


def _baseline(r: Obj) -> str:
    b = r["baseline"]
    if not b:
        return "-"
    ours = b["ours_vast_calls_per_min"]
    ratio = f"x{b['seed_calls_per_min'] / ours:.0f}" if ours else "-"
    return (
        f"{b['seed_calls_per_min']:g} vs {ours:g} calls/min ({ratio}); sent "
        f"{b['vast_calls_per_min']:g}/min here (x{b['calls_ratio']}) with "
        f"{b['poller_cores']:g} cores"
    )


ROWS: list[Row] = [
    ("pods", lambda r: str(r["pods"])),
    ("create pod objects", _field("create_pod_objects_s", " s")),
    ("all Running after", _field("all_running_s", " s")),
    ("all Ready after (probed)", _field("all_ready_s", " s")),
    ("per pod to Running p50 / p99", _pair("pod_running_p50_s", "pod_running_p99_s")),
    (
        "bound → create sent p50 / p99",
        _pair("bound_to_create_sent_p50_s", "bound_to_create_sent_p99_s"),
    ),
    ("  pacer wait (create) p50/p99/max", _pacer),
    ("  min gap between creates", _field("create_gap_min_s", " s")),
    (
        "instance running → pod Running p50 / p99",
        _pair("instance_running_to_pod_running_p50_s", "instance_running_to_pod_running_p99_s"),
    ),
    ("CPU-s ramp node / vast / kube", _cpu("cpu_ramp_s")),
    ("cores steady node / vast / kube", _cpu("cpu_steady_cores")),
    ("CPU-s delete node / vast / kube", _cpu("cpu_delete_s")),
    ("node RSS idle / held / peak", _rss),
    ("node RSS per pod (held - idle)", _field("node_rss_per_pod_kb", " KB")),
    ("Vast calls/min steady", _calls),
    ("Vast 429s", _field("vast_429s")),
    ("Kubernetes calls per pod", _field("kube_calls_per_pod")),
    ("loop stall p99 / max, whole run", _stall("loop_stall")),
    ("loop stall p99 / max, holding", _stall("loop_stall_hold")),
    ("GC gen0 / gen1 / gen2 (count, worst)", _collections),
    ("Lease renewal, longest gap", _field("lease_renewal_gap_max_s", " s")),
    ("Ready after the hold", _field("ready_after_hold")),
    ("delete all → all destroyed", _field("delete_all_s", " s")),
    ("DestroyFailed events", _field("destroy_failed_events")),
    ("leaked", _field("leaked")),
    ("instances per pod", _field("instances_per_pod")),
    ("baseline (seed's per-pod polling)", _baseline),
]
"""The table's rows, top to bottom: a label and how one run's result shows in it."""


# -- --agent --------------------------------------------------------------------------------


def render_agent_table(results: list[Obj], args: argparse.Namespace) -> str:
    """``--agent``'s table: one column per pod count, under a title naming the setup and the
    agent measured (this checkout's Python in the simulator, unless a binary was given)."""
    table = [[name, *(show(r) for r in results)] for name, show in AGENT_ROWS]
    title = (
        f"vk-trio bench --agent: real sandboxes (sim vast --run-containers), Vast rate limits "
        f"{'real' if args.real_limits else 'off'}, {args.boot_seconds:g} s boots, "
        f"{args.hold:g} s idle windows, {os.cpu_count()} CPUs"
    )
    agents = sorted({str(r["agent"]) for r in results})
    notes = [
        *(f"agent: {a}" for a in agents),
        f"extrapolated: node idle/N-linked cost per agent times {EXTRAPOLATE_TO:,}, linear; "
        "not measured (1,000 sandboxes with Python agents would need ~68 GB of RSS here)",
    ]
    return "\n".join([title, *notes, "", *_aligned(table)])


def _triple(a: str, b: str, c: str, unit: str = " s") -> Callable[[Obj], str]:
    return lambda r: f"{_cell(r[a])} / {_cell(r[b])} / {_cell(r[c])}{unit}"


def _agent_rss(r: Obj) -> str:
    return (
        f"{r['agents_found']} / {_cell(r['agent_rss_p50_mb'])} / {_cell(r['agent_rss_max_mb'])} MB"
    )


AGENT_ROWS: list[Row] = [
    ("pods (under the agent)", lambda r: str(r["pods"])),
    ("all containers running after", _field("all_started_s", " s")),
    (
        "instance running → container running p50 / p95 / max",
        _triple(
            "instance_running_to_started_p50_s",
            "instance_running_to_started_p95_s",
            "instance_running_to_started_max_s",
        ),
    ),
    (
        "  split p50: → node sees it / → linked / → seen",
        _triple(
            "split_running_to_seen_p50_s",
            "split_seen_to_linked_p50_s",
            "split_linked_to_started_p50_s",
        ),
    ),
    (
        "pod created → container running p50 / p95",
        _pair("created_to_started_p50_s", "created_to_started_p95_s"),
    ),
    ("agents found / their RSS p50 / max", _agent_rss),
    ("agent PSS p50 (shared pages split among agents)", _field("agent_pss_p50_mb", " MB")),
    ("agent CPU-s to container running, per agent", _field("agent_cpu_start_s", " s")),
    ("agent CPU idle, per agent", _field("agent_cores_idle", " cores")),
    ("sandbox pid 1 RSS p50 (simulator only)", _field("launcher_rss_p50_mb", " MB")),
    ("node RSS, 0 / N agents linked", _pair("node_rss_0_mb", "node_rss_n_mb", " MB")),
    ("node RSS per linked agent", _field("node_rss_per_agent_kb", " KB")),
    ("node CPU idle, 0 / N agents linked", _pair("node_cores_0", "node_cores_n", " cores")),
    ("node CPU per linked agent (idle)", _field("node_cpu_s_per_agent_per_hour", " CPU-s/h")),
    ("node CPU-s per pod, create → running", _field("node_cpu_ramp_s_per_pod", " s")),
    ("node RSS at 1,000 agents (extrapolated)", _field("extrapolated_node_rss_mb", " MB")),
    ("node CPU at 1,000 idle agents (extrapolated)", _field("extrapolated_node_cores", " cores")),
    ("leaked", _field("leaked")),
    ("instances per pod", _field("instances_per_pod")),
]
"""``--agent``'s rows, top to bottom."""
