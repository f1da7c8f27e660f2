"""The soak's marketplace: the seeded real-offer market plus enough RTX 3090s for every pod.

The extra offers are spread over a price range that straddles the pods' price caps
(``workload.PRICE_CAPS``), so that a node which ignored a cap would have something to buy
above it; there are enough under the lowest cap for every pod, so that pods converge to
Running instead of waiting for offers.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from vk_trio.devtools.sim.vast import VastSim, VastSimConfig

CHEAP_PRICE = 0.25
"""Under every cap in ``workload.PRICE_CAPS``."""
PRICIER = (0.40, 0.55, 0.80, 1.50)
"""Above some caps: bait for a node that would not check them."""


_RTX_3090: dict[str, object] = {
    "gpu_name": "RTX 3090",
    "num_gpus": 1,
    "geolocation": "Texas, US",
    "reliability": 0.999,
    "reliability2": 0.999,
    "verification": "verified",
    "rentable": True,
    "rented": False,
}
"""A partial offer that passes the default requirements; the simulator fills in the rest."""


def write_market(folder: Path, *, pods: int, seed: int) -> Path:
    """Write the market as an ``--offers`` file for ``vk-trio sim vast``; returns its path."""
    rng = random.Random(f"{seed}:market")
    market = VastSim(VastSimConfig(seed=seed))
    prices = [CHEAP_PRICE] * (pods + 10) + [rng.choice(PRICIER) for _ in range(pods)]
    extra = [dict(_RTX_3090, dph_total=price) for price in prices]
    market.add_offers(extra)
    path = folder / "offers.json"
    path.write_bytes(msgspec.json.encode(market.offers()))
    return path
