"""Offer selection: from a pod's :class:`Requirements` to the offer worth buying.

Two steps, each a pure function so that the lifecycle, the dry run and the tests share them:

1. :func:`build_query` makes the JSON body for ``POST /api/v0/bundles/`` (``vast-api.md`` §3).
2. :func:`select` re-checks every returned offer against every constraint locally. The server's
   filter is not trusted (as SkyPilot does, ``peers.md`` §4): query semantics are undocumented,
   numbers may be compared as strings, and an offer must never be bought above ``price-max``.
   Rejections carry a stable constraint key, so "no matching offers" can name the constraint
   that filtered the most.

No I/O happens in this module.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from vk_trio.annotations import (
    DISK,
    GPU_FALLBACKS,
    GPU_TYPE,
    INTERRUPTIBLE,
    MEMORY,
    MIN_CUDA,
    MIN_RELIABILITY,
    PRICE_MAX,
    REGION,
    VERIFIED,
)
from vk_trio.provider.requirements import (
    GPU_LIMIT,
    Requirements,
    gpu_key,
    unknown_gpu_hints,
    usd,
)
from vk_trio.vast.models import Offer

__all__ = [
    "CONSTRAINTS",
    "QUERY_LIMIT",
    "Rejection",
    "Selection",
    "bid_price",
    "build_query",
    "explain_query",
    "offer_price",
    "rejection",
    "select",
    "violations",
]

QUERY_LIMIT = 200
"""Enough offers that local re-checks (and the fallback GPU types) still leave choices, small
enough for one response; the real market has ~1,400 offers in total."""

_PRICE_EPSILON = 1e-9
"""Prices are floats computed by Vast (``dph_base`` + storage); never reject $0.30 as > $0.30."""


# The search query


def build_query(req: Requirements) -> dict[str, Any]:
    """The ``POST /api/v0/bundles/`` body that finds offers meeting every requirement.

    Cheapest first, by the price the pod will pay (``min_bid`` for bids). ``allocated_storage``
    makes ``dph_total`` include the disk the pod asks for, so ``price-max`` covers storage too.
    """
    query = explain_query(req)
    price_field = "min_bid" if req.interruptible else "dph_total"
    if req.price_max is not None:
        query[price_field] = {"lte": req.price_max}
    if req.countries is not None:
        query["geolocation"] = {"in": sorted(req.countries)}
    if req.min_gpu_ram_mb is not None:
        query["gpu_ram"] = {"gte": req.min_gpu_ram_mb}
    query["disk_space"] = {"gte": req.disk_gb}
    query["reliability"] = {"gte": req.min_reliability}
    if req.verified:
        query["verified"] = {"eq": True}
    if req.min_cuda is not None:
        query["cuda_max_good"] = {"gte": req.min_cuda}
    return query


def explain_query(req: Requirements) -> dict[str, Any]:
    """A broader query: only availability, GPU model and count. Checking its offers locally
    says *which* constraint rules them out ("12 too expensive, 30 outside North America"),
    which the strict query cannot: it returns nothing when nothing matches."""
    query: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "num_gpus": {"eq": req.num_gpus},
    }
    if len(req.gpu_names) == 1:
        query["gpu_name"] = {"eq": req.gpu_names[0]}
    elif req.gpu_names:
        query["gpu_name"] = {"in": list(req.gpu_names)}
    price_field = "min_bid" if req.interruptible else "dph_total"
    query["order"] = [[price_field, "asc"]]
    query["type"] = "bid" if req.interruptible else "on-demand"
    query["allocated_storage"] = req.disk_gb
    query["limit"] = QUERY_LIMIT
    return query


# --------------------------------------------------------------------------------------------
# Local re-checks and ranking


class Rejection(msgspec.Struct, frozen=True):
    """Why one offer does not fit. ``constraint`` is a stable key (see :data:`CONSTRAINTS`);
    ``reason`` a short sentence with both sides, e.g. "price $0.35/h > price-max $0.30/h"."""

    constraint: str
    reason: str

    def __str__(self) -> str:
        return self.reason


CONSTRAINTS: Mapping[str, str] = {
    "available": "availability (rentable, not rented)",
    "gpu-type": f"{GPU_TYPE} / {GPU_FALLBACKS}",
    "gpu-count": GPU_LIMIT,
    "price-max": PRICE_MAX,
    "interruptible": INTERRUPTIBLE,
    "region": REGION,
    "memory": MEMORY,
    "disk": DISK,
    "min-reliability": MIN_RELIABILITY,
    "verified": VERIFIED,
    "min-cuda": MIN_CUDA,
}
"""Constraint key → where the user sets it, in the order offers are checked."""


def offer_price(offer: Offer, req: Requirements) -> float:
    """What the pod would pay per hour, storage included: ``dph_total`` on demand; for a bid,
    ``min_bid`` (the GPU part) plus the offer's storage share (``dph_total - dph_base``), which
    Vast adds to the instance's ``dph_total`` whatever the bid."""
    if not req.interruptible:
        return offer.dph_total
    return offer.min_bid + max(0.0, offer.dph_total - offer.dph_base)


def violations(offer: Offer, req: Requirements) -> list[Rejection]:
    """Every constraint ``offer`` fails, in :data:`CONSTRAINTS` order; empty if it fits."""
    found = _offer_violations(offer, req)
    price_problem = _price_violation(offer, req)
    if price_problem is not None:
        found.append(price_problem)
    return found + _machine_violations(offer, req)


def _offer_violations(offer: Offer, req: Requirements) -> list[Rejection]:
    """Whether the offer can be had at all, and with the GPUs the pod asks for."""
    found: list[Rejection] = []
    if not offer.rentable:
        found.append(Rejection("available", "not rentable"))
    elif offer.rented:
        found.append(Rejection("available", "already rented"))
    if req.gpu_names and gpu_key(offer.gpu_name) not in {gpu_key(n) for n in req.gpu_names}:
        wanted = ", ".join(req.gpu_names)
        found.append(Rejection("gpu-type", f"gpu {offer.gpu_name or '?'} not in [{wanted}]"))
    if offer.num_gpus != req.num_gpus:
        found.append(Rejection("gpu-count", f"{offer.num_gpus} GPUs, need {req.num_gpus}"))
    return found


def _machine_violations(offer: Offer, req: Requirements) -> list[Rejection]:
    """Where the machine is and what it has: region, GPU memory, disk, trust, CUDA."""
    found: list[Rejection] = []

    def reject(constraint: str, reason: str) -> None:
        found.append(Rejection(constraint, reason))

    if req.countries is not None and offer.country not in req.countries:
        reject("region", f"country {offer.country or 'unknown'} not in {req.region}")
    if req.min_gpu_ram_mb is not None and not offer.gpu_ram >= req.min_gpu_ram_mb:
        reject("memory", f"gpu_ram {offer.gpu_ram:g} MB < {req.min_gpu_ram_mb:g} MB")
    if not offer.disk_space >= req.disk_gb:
        reject("disk", f"disk {offer.disk_space:g} GB < {req.disk_gb:g} GB")
    if not offer.reliability >= req.min_reliability:
        reject("min-reliability", f"reliability {offer.reliability:.4g} < {req.min_reliability:g}")
    if req.verified and not offer.verified:
        reject("verified", offer.verification or "unverified")
    if req.min_cuda is not None and not offer.cuda_max_good >= req.min_cuda:
        reject("min-cuda", f"cuda {offer.cuda_max_good:g} < {req.min_cuda:g}")
    return found


def _price_violation(offer: Offer, req: Requirements) -> Rejection | None:
    """What is wrong with the offer's price (or bid) for ``req``, if anything."""
    price = offer_price(offer, req)
    if req.interruptible and not (math.isfinite(offer.min_bid) and offer.min_bid > 0):
        return Rejection("interruptible", "no bid price (min_bid)")
    if not (math.isfinite(price) and price > 0):
        # A malformed offer (dph_total missing, negative, huge): without a cap it would
        # otherwise rank first and be bought at whatever Vast really charges.
        return Rejection("available", f"no valid price (dph_total {price:g})")
    if req.price_max is not None and not price <= req.price_max + _PRICE_EPSILON:
        what = "bid with storage" if req.interruptible else "price"
        return Rejection("price-max", f"{what} {usd(price)}/h > price-max {usd(req.price_max)}/h")
    return None


def rejection(offer: Offer, req: Requirements) -> Rejection | None:
    """The first constraint ``offer`` fails, or None when it can be bought."""
    found = violations(offer, req)
    return found[0] if found else None


def bid_price(offer: Offer, req: Requirements) -> float | None:
    """The ``price`` to send with the create: None buys on demand; for an interruptible pod it
    is the offer's ``min_bid`` (as SkyPilot bids). Never above ``price-max``: :func:`select`
    rejects offers whose bid plus storage exceeds it, and bidding more is not ours to do."""
    return offer.min_bid if req.interruptible else None


class Selection(msgspec.Struct, kw_only=True):
    """The outcome of checking a search's offers against a pod's requirements."""

    requirements: Requirements
    ranked: list[Offer]
    """Offers that fit, best first: preferred GPU, then price, then reliability, then id."""
    rejected: list[tuple[Offer, Rejection]]
    """Offers that do not fit, each with the first constraint it fails."""
    rejected_by: dict[str, int]
    """Constraint key → how many offers fail it (an offer failing two counts for both)."""

    @property
    def most_restrictive(self) -> str | None:
        """The constraint key that ruled out the most offers (ties: the earlier-checked one)."""
        if not self.rejected_by:
            return None
        order = list(CONSTRAINTS)
        return min(self.rejected_by, key=lambda key: (-self.rejected_by[key], order.index(key)))

    def describe(self) -> str:
        """One sentence for an Event, a log line or the dry run's summary."""
        total = len(self.ranked) + len(self.rejected)
        if self.ranked:
            best = self.ranked[0]
            price = offer_price(best, self.requirements)
            return (
                f"{len(self.ranked)} of {total} offers match; best: offer {best.id}"
                f" {best.gpu_name} x{best.num_gpus} at {usd(price)}/h"
                f" in {(best.geolocation or '').strip(' ,') or 'unknown location'}"
            )
        wanted = self.requirements.describe()
        hints = "".join(f"; {hint}" for hint in unknown_gpu_hints(self.requirements))
        if not total:
            return f"no offers found for {wanted}{hints}"
        counts = sorted(self.rejected_by.items(), key=lambda item: -item[1])
        worst = ", ".join(f"{CONSTRAINTS[key]} {count}" for key, count in counts)
        return f"none of {total} offers match {wanted}; rejected by {worst}{hints}"


def select(offers: Sequence[Offer], req: Requirements) -> Selection:
    """Check every offer locally and rank those that fit (see :class:`Selection`)."""
    ranked: list[Offer] = []
    rejected: list[tuple[Offer, Rejection]] = []
    counts: Counter[str] = Counter()
    for offer in offers:
        found = violations(offer, req)
        if found:
            rejected.append((offer, found[0]))
            counts.update(found_one.constraint for found_one in found)
        else:
            ranked.append(offer)
    preference = {gpu_key(name): index for index, name in enumerate(req.gpu_names)}
    ranked.sort(
        key=lambda offer: (
            preference.get(gpu_key(offer.gpu_name), 0),
            offer_price(offer, req),
            -offer.reliability,
            offer.id,
        )
    )
    return Selection(requirements=req, ranked=ranked, rejected=rejected, rejected_by=dict(counts))
