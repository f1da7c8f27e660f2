"""``vk-trio spend``: what the pods' Vast.ai instances cost, by namespace and by pod, over a
period, from what the node records on each pod (``vast.ai/cost``) and the pod's own times.

It reads the cluster the way ``vk-trio run`` does (``--kubeconfig``, ``$KUBECONFIG``,
``~/.kube/config``, else the in-cluster service account) and lists pods; nothing else is
asked, of the cluster or of Vast. A pod whose life started before the period counts in
proportion of its life that falls in it (spend spread evenly over its life: an estimate).
Deleted pods are gone from the API server, and their record with them.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import msgspec
import trio

from vk_trio.annotations import COST
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import ConfigError, load_config
from vk_trio.kube.errors import KubeError

__all__ = ["PodSpend", "add_arguments", "main", "parse_period", "pod_spend", "report", "run"]

DESCRIPTION = """\
What the pods' Vast.ai instances cost, by namespace and by pod, over a period (the last 7 days
unless --since says otherwise). Read from the pods' vast.ai/cost annotations, which the node
keeps at what each pod's instances have cost; no Prometheus needed.

A pod whose life started before the period counts in proportion of its life within it.
Pods already deleted are not counted: their record went with them."""

_PERIOD = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--since",
        default="7d",
        type=parse_period,
        help='the period, back from now: "24h", "7d", "2w", "90m"',
    )
    parser.add_argument("-n", "--namespace", help="only this namespace (unset: every namespace)")
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig to read the cluster with (unset: $KUBECONFIG, ~/.kube/config, or "
        "the in-cluster service account, as vk-trio run)",
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


def parse_period(text: str) -> timedelta:
    """``24h``, ``7d``, ``1d12h`` → a duration (argparse's type: a clear error otherwise)."""
    parts = _PERIOD.findall(text.strip().lower())
    if not parts or "".join(a + u for a, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f'{text!r} is not a period such as "24h" or "7d"')
    return timedelta(seconds=sum(float(amount) * _UNIT[unit] for amount, unit in parts))


@dataclass(frozen=True)
class PodSpend:
    namespace: str
    name: str
    cost: float
    """USD recorded on the pod (its whole life)."""
    in_period: float
    """USD of it that falls in the period."""
    started: datetime
    ended: datetime | None


def pod_spend(pod: dict[str, Any], since: datetime, until: datetime) -> PodSpend | None:
    """What ``pod`` (as the API returns it) cost in ``[since, until]``; None without a record."""
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(COST)
    started = _time((pod.get("status") or {}).get("startTime") or meta.get("creationTimestamp"))
    if raw is None or started is None:
        return None
    try:
        cost = float(raw)
    except ValueError:
        return None
    ended = _ended(pod)
    life_end = ended or until
    life = (life_end - started).total_seconds()
    if life <= 0:
        share = 1.0 if since <= started <= until else 0.0
    else:
        overlap = (min(life_end, until) - max(started, since)).total_seconds()
        share = max(0.0, overlap) / life
    return PodSpend(
        meta.get("namespace", ""), meta.get("name", ""), cost, cost * share, started, ended
    )


def _ended(pod: dict[str, Any]) -> datetime | None:
    """When the pod's container stopped for good, or None while it lives."""
    status = pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return None
    finished = [
        _time(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        for c in status.get("containerStatuses") or []
    ]
    known = [t for t in finished if t is not None]
    return max(known) if known else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def report(spends: list[PodSpend], since: datetime, until: datetime, out: TextIO) -> None:
    """The table: namespaces (largest first), then pods (largest first)."""
    counted = [s for s in spends if s.in_period > 0]
    by_namespace: dict[str, float] = {}
    for spend in counted:
        by_namespace[spend.namespace] = by_namespace.get(spend.namespace, 0.0) + spend.in_period
    out.write(f"Spend from {_show(since)} to {_show(until)} (from the pods' {COST})\n\n")
    rows: list[tuple[str, ...]] = [("NAMESPACE", "PODS", "USD")]
    for namespace, dollars in sorted(by_namespace.items(), key=lambda kv: (-kv[1], kv[0])):
        pods = sum(1 for s in counted if s.namespace == namespace)
        rows.append((namespace, str(pods), f"{dollars:.4f}"))
    rows.append(("TOTAL", str(len(counted)), f"{sum(by_namespace.values()):.4f}"))
    _table(rows, out)
    out.write("\n")
    pod_rows: list[tuple[str, ...]] = [("NAMESPACE", "POD", "USD", "STARTED", "ENDED")]
    for spend in sorted(counted, key=lambda s: (-s.in_period, s.namespace, s.name)):
        ended = _show(spend.ended) if spend.ended else "running"
        pod_rows.append(
            (spend.namespace, spend.name, f"{spend.in_period:.4f}", _show(spend.started), ended)
        )
    _table(pod_rows, out)


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def collect(
    kube: KubeClient, namespace: str | None, since: datetime, until: datetime
) -> list[PodSpend]:
    """Every pod's spend in the period (one list call per page of 500 pods)."""
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    spends: list[PodSpend] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        page = await kube.request("GET", path, params=params)
        for pod in page.get("items") or []:
            spend = pod_spend(pod, since, until)
            if spend is not None:
                spends.append(spend)
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return spends
        params = {**params, "continue": token}


async def run(args: argparse.Namespace, out: TextIO) -> None:
    """Read the cluster and write the report (or JSON) to ``out``."""
    until = datetime.now(UTC)  # wall clock: the pods' own timestamps are wall clock
    since = until - args.since
    cluster = await load_config(kubeconfig=args.kubeconfig)
    async with KubeClient.from_config(cluster) as kube:
        spends = await collect(kube, args.namespace, since, until)
    if args.output == "json":
        rows = [
            {"namespace": s.namespace, "pod": s.name, "usd": s.in_period, "usd_total": s.cost}
            for s in spends
            if s.in_period > 0
        ]
        out.write(
            msgspec.json.encode(
                {"since": _show(since), "until": _show(until), "pods": rows}
            ).decode()
            + "\n"
        )
    else:
        report(spends, since, until, out)


def main(args: argparse.Namespace) -> int:
    """0 on success; 2 when the cluster cannot be found or read, said in one line."""
    try:
        trio.run(run, args, sys.stdout)
    except (ConfigError, KubeError) as exc:
        print(f"vk-trio spend: cannot read the cluster: {exc}", file=sys.stderr)
        return 2
    return 0
