"""Reading Vast instances: status strings and ``status_msg`` turned into observations.

Vast describes an instance with ``actual_status`` (``None``/``created``/``loading``/
``scheduling``/``rebooting`` while it boots, ``running``, ``exited``, ``stopped``, ``offline``,
``frozen``, ``unknown``…) and a free-text ``status_msg`` (``vast-api.md`` §5). This module is
the only place that interprets them; the kubelet half sees only the provider-neutral
observations of ``vk_trio.node.provider``.

An ``InstanceWatch`` follows one instance and remembers what a single snapshot cannot say:
when it was bought (its startup clock), whether it was ever seen (a missing instance is only
lost after a grace), whether it ran, and since when it has been offline or outbid. Pure: the
caller passes the loop time in, so tests need no clock.

An interruptible instance (``is_bid``) that Vast stopped while we want it running
(``intended_status`` running) was outbid (vast-api.md §7: outbid instances go ``stopped``, not
destroyed). It is ``Interrupted`` for up to the pod's ``vast.ai/outbid-grace``, then given up:
``Lost`` (``restartPolicy`` decides) or, with ``vast.ai/on-outbid: replace``, ``Preempted``
(a new instance at once). Raising the bid is the provider's (it calls Vast).
"""

from __future__ import annotations

import datetime as dt
import re
import time

from vk_trio.node.provider import (
    Booting,
    Exited,
    Interrupted,
    Lost,
    MachineFailed,
    Observation,
    Preempted,
    Running,
)
from vk_trio.node.status import now_rfc3339
from vk_trio.provider.requirements import OutbidPolicy
from vk_trio.vast import Instance

__all__ = ["BOOTING", "OUTBID_REASON", "InstanceWatch", "exit_code", "outbid"]

BOOTING = (None, "created", "loading", "scheduling", "rebooting")
"""``actual_status`` values of an instance on its way to running."""

OUTBID_REASON = "VastOutbid"
"""The reason of an outbid pod's ``DisruptionTarget`` condition and Warning Event."""

_EXIT_CODE = re.compile(r"exit(?:ed)?(?: with)?(?: code| status)?[ :=]*(-?\d+)", re.IGNORECASE)


def exit_code(message: str) -> int | None:
    """The exit code Vast mentions in ``status_msg``; None when it names none (unknown)."""
    match = _EXIT_CODE.search(message)
    return int(match.group(1)) if match else None


def outbid(instance: Instance) -> bool:
    """Vast stopped this interruptible instance while it was meant to run: outbid."""
    return (
        instance.is_bid
        and instance.actual_status == "stopped"
        and instance.intended_status in (None, "running")
    )


def age(instance: Instance) -> float:
    """Seconds since Vast created ``instance`` (0 when it does not say, or the clocks differ)."""
    if not instance.start_date:
        return 0.0
    return max(0.0, time.time() - instance.start_date)


class InstanceWatch:
    """What one instance is doing, snapshot after snapshot.

    ``startup``: seconds from purchase to running before the machine is blamed;
    ``visibility_grace``: seconds a just-bought instance may be missing from the list (it is
    lost only once a sweep that started after that looked for it in vain);
    ``offline_grace``: seconds a once-running instance may be offline before it is replaced;
    ``price_max``: the pod's cap, re-checked against what the instance really bills.
    ``ran``: the pod already showed this instance running (adopted after a restart).
    ``on_outbid`` and ``outbid_grace``: what an outbid instance becomes, and after how long.
    """

    def __init__(
        self,
        instance_id: int,
        *,
        now: float,
        startup: float,
        visibility_grace: float,
        offline_grace: float,
        price_max: float | None,
        ran: bool,
        on_outbid: OutbidPolicy = "wait",
        outbid_grace: float = 600.0,
    ) -> None:
        self.instance_id = instance_id
        self.bought_at = now
        self.startup = startup
        self.visibility_grace = visibility_grace
        self.offline_grace = offline_grace
        self.price_max = price_max
        self.ran = ran
        self.seen = False
        self.offline_since: float | None = None
        self.machine_id: int | None = None
        self.on_outbid = on_outbid
        self.outbid_grace = outbid_grace
        self.outbid_since: float | None = None
        """Loop time since when it has been outbid; None while it is not."""
        self.outbid_at = ""
        """The same, on the wall clock (RFC 3339), for the pod's ``DisruptionTarget``."""
        self.rebid_for: float | None = None
        """The ``outbid_since`` whose bid was raised already (``rebid``: once per outbid)."""

    def startup_deadline(self) -> float:
        """Loop time at which a boot that has not reached running is given up."""
        return self.bought_at + self.startup

    def outbid_earlier(self, at: str, *, now: float) -> None:
        """An earlier process saw the instance outbid since ``at`` (RFC 3339, as the pod's
        ``DisruptionTarget`` says): if it still is, its grace counts from then, not from
        this process's first look. An unreadable time changes nothing."""
        try:
            then = dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        self.outbid_since = now - max(0.0, time.time() - then)
        self.outbid_at = at

    def wake_in(self, now: float, most: float) -> float:
        """Seconds until the next deadline that a snapshot's change would not announce (a
        boot given up, an outbid grace over), at most ``most``."""
        deadlines = [self.startup_deadline()]
        if self.outbid_since is not None:
            deadlines.append(self.outbid_since + self.outbid_grace)
        return min([most, *(d - now for d in deadlines if d > now)])

    def missing_from(self) -> float:
        """When a listing without the (never seen) instance starts to mean it is gone."""
        return self.bought_at + self.visibility_grace

    def observe(
        self, instance: Instance | None, now: float, *, looked: bool = True
    ) -> Observation | None:
        """What ``instance`` amounts to now; None while nothing to say. ``instance`` None is
        "not listed"; ``looked`` says whether a sweep that started at ``missing_from()`` or
        later looked for it, without which a never-seen instance is not yet missing."""
        if instance is None:
            if self.seen or (looked and now >= self.missing_from()):
                return Lost("InstanceLost", f"instance {self.instance_id} disappeared")
            return None
        if not self.seen:  # adopted after a restart: its startup began when it was created
            self.bought_at = min(self.bought_at, now - age(instance))
            self.seen = True
        self.machine_id = instance.machine_id
        if outbid(instance):
            self.offline_since = None
            if self.outbid_since is None:
                self.outbid_since, self.outbid_at = now, now_rfc3339()
            return self._outbid(instance, now - self.outbid_since)
        self.outbid_since = None
        status = instance.actual_status
        offline = status not in ("running", *BOOTING)
        self.offline_since = (self.offline_since or now) if offline else None
        return self._classify(instance, now)

    def _outbid(self, instance: Instance, stopped_for: float) -> Observation:
        """Interrupted for up to the grace; then lost, or (``replace``) preempted."""
        name = f"instance {instance.id}"
        grace = f"{self.outbid_grace:.0f}s"
        if stopped_for >= self.outbid_grace:
            if self.on_outbid == "replace":
                return Preempted("Outbid", f"{name} outbid for {grace}; buying a new instance")
            return Lost("Outbid", f"{name} outbid and not resumed by Vast within {grace}")
        then = {
            "wait": "waiting for Vast to resume it",
            "rebid": "bidding up to vast.ai/price-max and waiting for Vast to resume it",
            "replace": "waiting for Vast to resume it, else buying a new instance",
        }[self.on_outbid]
        return Interrupted(
            OUTBID_REASON,
            f"{name} outbid: Vast stopped it (its disk is kept and bills "
            f"${instance.storage_total_cost:.4f}/h); {then} for up to {grace}",
            self.outbid_at,
        )

    def _classify(self, instance: Instance, now: float) -> Observation:
        status = instance.actual_status
        message = (instance.status_msg or "").strip()
        name = f"instance {instance.id}"
        late = now - self.bought_at > self.startup
        cap = self.price_max
        if cap is not None and instance.dph_total > cap + 1e-6:
            return MachineFailed(
                "PriceCapExceeded",
                f"{name} bills ${instance.dph_total:.4f}/h, above vast.ai/price-max "
                f"${cap:.4f}/h; destroying it and trying another machine",
            )
        if status == "running":
            self.ran = True
            return _running(instance)
        if "OCI runtime create failed" in message or (status == "created" and "rror" in message):
            return MachineFailed(
                "StartFailed", f"{name} failed to start: {message[:300]}; trying another machine"
            )
        if status == "exited":
            return Exited(exit_code(message), message[:500])
        if status in BOOTING:
            return self._booting(instance, late)
        return self._not_serving(instance, now, late)

    def _booting(self, instance: Instance, late: bool) -> Observation:
        """Created or loading: a reboot of one that ran, a boot, or a boot too slow."""
        name, status = f"instance {instance.id}", instance.actual_status
        if self.ran:
            return Booting(f"{name} {status}")
        if late:
            return MachineFailed(
                "BootTimeout",
                f"{name} not running within its startup timeout; trying another machine",
            )
        message = (instance.status_msg or "").strip()
        detail = f": {message[:200]}" if message else ""
        return Booting(f"{name} {status or 'scheduling'}{detail}")

    def _not_serving(self, instance: Instance, now: float, late: bool) -> Observation:
        """Stopped, frozen, offline, unknown: not serving; replaced if it lasts."""
        name, status = f"instance {instance.id}", instance.actual_status
        if self.offline_since is not None and now - self.offline_since > self.offline_grace:
            return Lost("HostOffline", f"{name} {status} too long")
        if self.ran:
            return Booting(f"{name} {status}")
        if late:  # it never ran, and its startup time is up whatever the reason
            return MachineFailed(
                "BootTimeout", f"{name} {status}, never running within its startup timeout"
            )
        return Booting(f"{name} {status}; waiting for its host")


def _running(instance: Instance) -> Running:
    address = instance.address
    endpoints = instance.endpoints()
    where = ", ".join(f"{port} → {addr}" for port, addr in endpoints.items()) or address
    return Running(
        address=address,
        endpoints=endpoints,
        description=f"instance {instance.id} running at {address}: {where}",
        container_id=f"vast://{instance.id}",
    )
