"""Properties of ``vk_trio.provider.selection.select`` over random markets and random requirements.

Soundness: the offer that would be bought satisfies every constraint, checked here field by
field, independently of ``violations()``, and never bills more than ``price-max`` (a bid pays
its bid plus storage; an offer without a valid price is never bought).
Completeness: if any offer satisfies every constraint, something is ranked.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vk_trio.provider.regions import REGIONS
from vk_trio.provider.requirements import (
    Requirements,
)
from vk_trio.provider.selection import (
    bid_price,
    select,
)
from vk_trio.vast.models import Offer

GPUS = ["RTX 3060", "RTX 3090", "RTX 4090", "A100 SXM4", "H100 SXM"]
COUNTRIES = ["US", "CA", "MX", "DE", "FR", "JP", "AU", "BR"]


def fits(offer: Offer, req: Requirements) -> bool:
    """Every constraint, written out against the raw offer fields."""
    price = paid_per_hour(offer, req)
    country = offer.geolocation.split(",")[-1].strip() if offer.geolocation else ""
    return (
        offer.rentable
        and not offer.rented
        and (not req.gpu_names or offer.gpu_name in req.gpu_names)
        and offer.num_gpus == req.num_gpus
        and (req.price_max is None or price <= req.price_max + 1e-9)
        and (offer.min_bid > 0 if req.interruptible else price > 0)
        and (req.countries is None or country in req.countries)
        and (req.min_gpu_ram_mb is None or offer.gpu_ram >= req.min_gpu_ram_mb)
        and offer.disk_space >= req.disk_gb
        and offer.reliability >= req.min_reliability
        and (not req.verified or offer.verification == "verified")
        and (req.min_cuda is None or offer.cuda_max_good >= req.min_cuda)
    )


def paid_per_hour(offer: Offer, req: Requirements) -> float:
    """What Vast bills: a bid instance pays its bid plus the offer's storage share."""
    if req.interruptible:
        return offer.min_bid + max(0.0, offer.dph_total - offer.dph_base)
    return offer.dph_total


prices = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)

offers = st.builds(
    Offer,
    id=st.integers(min_value=1, max_value=10_000),
    gpu_name=st.sampled_from(GPUS),
    num_gpus=st.sampled_from([1, 2, 4, 8]),
    gpu_ram=st.sampled_from([8192.0, 12288.0, 24576.0, 81920.0]),
    disk_space=st.floats(min_value=0.0, max_value=2000.0, allow_nan=False),
    dph_total=prices,
    dph_base=prices,
    min_bid=prices,
    reliability=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    geolocation=st.one_of(st.none(), st.sampled_from([f"Somewhere, {cc}" for cc in COUNTRIES])),
    verification=st.sampled_from(["verified", "unverified", "deverified", None]),
    cuda_max_good=st.sampled_from([11.8, 12.1, 12.2, 12.4]),
    rentable=st.booleans(),
    rented=st.booleans(),
)

requirements = st.builds(
    Requirements,
    gpu_names=st.lists(st.sampled_from(GPUS), unique=True, max_size=3).map(tuple),
    num_gpus=st.sampled_from([1, 2, 4, 8]),
    price_max=st.one_of(st.none(), st.floats(min_value=0.01, max_value=5.0)),
    countries=st.one_of(
        st.none(),
        st.just(REGIONS["North America"]),
        st.frozensets(st.sampled_from(COUNTRIES), min_size=1),
    ),
    min_gpu_ram_mb=st.one_of(st.none(), st.sampled_from([8000.0, 12000.0, 24000.0])),
    disk_gb=st.floats(min_value=1.0, max_value=1000.0),
    min_reliability=st.floats(min_value=0.0, max_value=1.0),
    verified=st.booleans(),
    min_cuda=st.one_of(st.none(), st.sampled_from([11.8, 12.1, 12.4])),
    interruptible=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(market=st.lists(offers, max_size=40), req=requirements)
def test_selection_is_sound_and_complete(market: list[Offer], req: Requirements) -> None:
    selection = select(market, req)
    assert len(selection.ranked) + len(selection.rejected) == len(market)
    for chosen in selection.ranked:
        assert fits(chosen, req)
    order = [
        (req.gpu_names.index(o.gpu_name) if req.gpu_names else 0, paid_per_hour(o, req))
        for o in selection.ranked
    ]
    assert order == sorted(order)
    for rejected, _ in selection.rejected:
        assert not fits(rejected, req)
    if any(fits(offer, req) for offer in market):
        assert selection.ranked
        best = selection.ranked[0]
        assert bid_price(best, req) == (best.min_bid if req.interruptible else None)
        if req.price_max is not None:
            assert paid_per_hour(best, req) <= req.price_max + 1e-9
    else:
        assert selection.ranked == []
        assert selection.most_restrictive is not None or not market
