"""The node-wide budget: what all of this node's instances may cost per hour, and how many.

A cap that counts only what the poller has seen would let ten pods buying at once all pass the
check before any of their instances shows up in a sweep. So a pod *holds* its price from the
moment it decides to buy until its instance is destroyed, and usage is, per pod UID, the larger
of what it holds and what the last sweep lists for it (an instance the sweep shows but nobody
holds, e.g. an orphan awaiting the reaper, still counts: it still bills).

Checking and holding happen with no ``await`` in between, so on one Trio thread no two pods
can take the same room. Nothing here talks to Vast or Kubernetes.

A stopped instance bills its storage only, and counts that much; but an *outbid* one counts
its full running price, storage included: Vast resumes it by itself, unasked, the moment the
market allows, and the room must then be there (a process that restarted holds nothing for
it, so only the listing can say so).
"""

from __future__ import annotations

from vk_trio.provider.observing import outbid
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import Instance


class Budget:
    """``max_hourly`` USD/h and ``max_instances`` across the node; None means no cap."""

    def __init__(
        self, poller: InstancePoller, *, max_hourly: float | None, max_instances: int | None
    ) -> None:
        self._poller = poller
        self._max_hourly = max_hourly
        self._max_instances = max_instances
        self._held: dict[str, float] = {}

    def usage(self, *, besides: str = "") -> tuple[float, int]:
        """USD/h and instances in use or held, leaving out pod ``besides``."""
        spend, count = 0.0, 0
        for uid in (self._poller.all_uids() | set(self._held)) - {besides}:
            listed = self._poller.instances(uid)
            held = self._held.get(uid)
            spend += max(sum(map(_committed, listed)), held or 0.0)
            count += max(len(listed), 0 if held is None else 1)
        return spend, count

    def refusal(self, uid: str, price: float) -> str | None:
        """Why pod ``uid`` may not buy at ``price`` now, or None if it fits."""
        if self._max_hourly is None and self._max_instances is None:
            return None  # no cap: skip the sum, which costs a pass over every pod
        spend, count = self.usage(besides=uid)
        if self._max_instances is not None and count + 1 > self._max_instances:
            return f"node instance cap reached: {count} of {self._max_instances} in use"
        if self._max_hourly is not None and spend + price > self._max_hourly + 1e-9:
            return (
                f"node spend cap reached: ${spend:.3f}/h of ${self._max_hourly:.3f}/h in use, "
                f"this pod needs ${price:.3f}/h"
            )
        return None

    def hold(self, uid: str, price: float) -> str | None:
        """Take room for pod ``uid`` at ``price`` if it fits: None when taken, else why not."""
        refusal = self.refusal(uid, price)
        if refusal is None:
            self._held[uid] = price
        return refusal

    def release(self, uid: str) -> None:
        """Pod ``uid`` bought nothing, or its instances are destroyed: its room is free."""
        self._held.pop(uid, None)


def _committed(instance: Instance) -> float:
    """$/h the cap counts for ``instance``: what it bills, or would bill once Vast resumes it."""
    return instance.dph_total if outbid(instance) else instance.billing
