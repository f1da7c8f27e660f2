"""What each pod's instances have cost: metered from the sweeps, recorded on the pod.

Vast bills GPU time by the second while an instance is ``running`` and storage while it
exists (vast-api.md §7). The instance record says both rates: ``dph_total`` (GPU plus
storage) and ``storage_total_cost`` (storage alone). So each instance has a meter that runs,
between two sweeps that saw it, at the rate the earlier one found: ``dph_total`` while
running, ``storage_total_cost`` otherwise (booting, stopped, offline), nothing once it is
gone. The booting sweep sees a boot end within ``poll_fast``, and a destroy is verified by a
fresh sweep, so a meter is off by seconds of GPU time, not minutes.

The pod's annotations are the record (``vast.ai/cost`` and, per instance,
``vast.ai/cost-instances``), written each slow sweep and once more when the pod ends; a
restarted node adds to what they say (``seed``), so only the time between the last write and
the restart is lost. Nothing here talks to Vast or Kubernetes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec
from loguru import logger

from vk_trio.annotations import COST, COST_INSTANCES
from vk_trio.provider.labels import LabelOwner, label_owner
from vk_trio.vast import Instance

__all__ = ["CostBook", "Reconciliation"]


@dataclass
class _Meter:
    """One instance's bill: ``dollars`` up to ``at`` (trio clock), ``rate`` USD/h since."""

    dollars: float
    at: float
    rate: float

    def total(self, now: float) -> float:
        return self.dollars + self.rate * max(0.0, now - self.at) / 3600.0

    def observe(self, now: float, rate: float) -> None:
        self.dollars, self.at, self.rate = self.total(now), now, rate


@dataclass
class _PodCost:
    owner: LabelOwner
    meters: dict[int, _Meter] = field(default_factory=dict)
    seeded: bool = False
    written: str | None = None
    """The ``vast.ai/cost`` value last written (or read) on the pod."""


@dataclass(frozen=True)
class Reconciliation:
    """The node's sum against Vast's charges, over the instances Vast reports charges for."""

    instances: int
    node: float
    vast: float

    @property
    def gap(self) -> float:
        """Vast's charges minus the node's sum, in USD."""
        return self.vast - self.node

    @property
    def gap_ratio(self) -> float:
        return self.gap / self.vast if self.vast else 0.0


class CostBook:
    """Meters per pod UID, fed each sweep by the poller, read by the cost recorder."""

    def __init__(self, node: str) -> None:
        self._node = node
        self._pods: dict[str, _PodCost] = {}
        self.last_reconciliation: Reconciliation | None = None

    def observe(self, instances: Iterable[Instance], now: float) -> None:
        """A sweep's picture of every instance of the node: start, move or stop meters."""
        seen: set[int] = set()
        for instance in instances:
            owner = label_owner(instance.label, self._node)
            if owner is None:
                continue
            seen.add(instance.id)
            pod = self._pods.setdefault(owner.uid, _PodCost(owner))
            meter = pod.meters.get(instance.id)
            if meter is None:
                pod.meters[instance.id] = _Meter(0.0, now, instance.billing)
            else:
                meter.observe(now, instance.billing)
        for pod in self._pods.values():
            for instance_id, meter in pod.meters.items():
                if instance_id not in seen and meter.rate:
                    meter.observe(now, 0.0)  # gone: it bills no more

    def seed(self, uid: str, owner: LabelOwner, annotations: Mapping[str, str]) -> None:
        """Add what the pod's record says was billed before this process (once per pod)."""
        pod = self._pods.setdefault(uid, _PodCost(owner))
        if pod.seeded:
            return
        pod.seeded = True
        recorded = _recorded(annotations.get(COST_INSTANCES))
        for instance_id, dollars in recorded.items():
            meter = pod.meters.setdefault(instance_id, _Meter(0.0, -math.inf, 0.0))
            meter.dollars += dollars
        pod.written = annotations.get(COST)

    def total(self, uid: str, now: float) -> float:
        """USD the pod's instances have cost so far."""
        pod = self._pods.get(uid)
        return sum(m.total(now) for m in pod.meters.values()) if pod else 0.0

    def record(self, uid: str, now: float) -> dict[str, str | None] | None:
        """The pod's cost annotations if they changed since last written, else None."""
        pod = self._pods.get(uid)
        if pod is None or not pod.meters:
            return None
        total = f"{self.total(uid, now):.6f}"
        if total == pod.written:
            return None
        per_instance = {str(i): round(m.total(now), 6) for i, m in sorted(pod.meters.items())}
        return {COST: total, COST_INSTANCES: msgspec.json.encode(per_instance).decode()}

    def written(self, uid: str, value: str) -> None:
        """The pod now shows ``value`` (``record`` says nothing until it changes)."""
        pod = self._pods.get(uid)
        if pod is not None:
            pod.written = value

    def uids(self) -> list[str]:
        return list(self._pods)

    def owner(self, uid: str) -> LabelOwner | None:
        pod = self._pods.get(uid)
        return pod.owner if pod else None

    def forget(self, uid: str) -> None:
        """The pod is gone and its final cost written."""
        self._pods.pop(uid, None)

    def by_pod(self, now: float) -> dict[tuple[str, str], float]:
        """(namespace, pod) → USD so far, for ``/metrics``."""
        return {
            (pod.owner.namespace, pod.owner.name): sum(m.total(now) for m in pod.meters.values())
            for pod in self._pods.values()
        }

    def reconcile(self, charges: Mapping[int, float], now: float) -> Reconciliation:
        """Compare the node's meters with Vast's charges for the instances in both."""
        node = vast = 0.0
        count = 0
        for pod in self._pods.values():
            for instance_id, meter in pod.meters.items():
                if instance_id in charges:
                    node += meter.total(now)
                    vast += charges[instance_id]
                    count += 1
        self.last_reconciliation = Reconciliation(count, node, vast)
        return self.last_reconciliation


def _recorded(raw: str | None) -> dict[int, float]:
    """``vast.ai/cost-instances`` read back; a damaged value counts as nothing recorded."""
    if not raw:
        return {}
    try:
        decoded = msgspec.json.decode(raw, type=dict[int, float])
    except (msgspec.DecodeError, msgspec.ValidationError):
        logger.warning("unreadable cost record on a pod; starting from zero", value=raw[:200])
        return {}
    return decoded
