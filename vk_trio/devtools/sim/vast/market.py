"""The simulated Vast.ai marketplace: where offers come from and how a search query picks them.

Offers start from a trimmed copy of a real search response (``data/offers.json``: 351 of the
1,396 offers captured from vast-ai/vast-python in November 2024, MIT licensed, notice alongside).
Real rows keep the real field names, units and oddities, so a client that works here has seen
what the real marketplace returns. A seed perturbs prices and reliabilities and assigns ids, so
each seed is a different but reproducible market.

The query evaluator implements ``vast-api.md`` §3: ``eq/neq/gt/gte/lt/lte/in/notin``, numeric
strings coerced (the CLI sends ``"0.98"``, never ``0.98``), the virtual columns ``verified``,
``geolocation`` (by country code), ``datacenter`` and ``external``, ``order``, ``limit``,
``type`` (``bid`` prices at ``min_bid``) and ``allocated_storage``. Unknown fields and operators
are ignored rather than refused, as the real server does for fields it does not know.

No I/O happens here except reading the packaged data file.
"""

from __future__ import annotations

import functools
import json
import operator
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

Row = dict[str, Any]
"""One offer or instance document, with the real API's field names."""

Resolver = Callable[[Row, str], tuple[bool, Any]]
"""``(row, field) -> (known, value)``: how a query reads a column; unknown fields are skipped."""

HOURS_PER_MONTH = 720.0
"""``storage_cost`` is $/GB/month; the real ``storage_total_cost`` divides by 30 days of hours."""

DEFAULT_ALLOCATED_STORAGE = 5.0
"""GB priced into ``dph_total`` when a query names none (the CLI default, ``vast-api.md`` §3.1)."""

_CONTROL_KEYS = frozenset({"order", "type", "limit", "allocated_storage", "disable_bundling"})

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}

_TEST_NETS = ("192.0.2", "198.51.100", "203.0.113")
"""Documentation address blocks: simulated hosts must never point at a real machine."""


class QueryError(ValueError):
    """A search body the real API answers with 400."""


class OfferQuery(msgspec.Struct, kw_only=True, frozen=True):
    """A parsed ``POST /bundles/`` body: conditions plus the control keys."""

    conditions: dict[str, dict[str, Any]]
    order: list[tuple[str, bool]]
    """``(field, descending)`` pairs, most significant first."""
    limit: int | None = None
    bid: bool = False
    allocated_storage: float = DEFAULT_ALLOCATED_STORAGE


# ---------------------------------------------------------------------------------------------
# Loading and generating the marketplace


def packaged_rows() -> list[Row]:
    """The real offers shipped with the package, stripped of ids and derived prices."""
    text = resources.files("vk_trio.devtools.sim").joinpath("data/offers.json").read_text("utf-8")
    doc = json.loads(text)
    columns: list[str] = doc["columns"]
    return [dict(zip(columns, values, strict=True)) for values in doc["rows"]]


def load_rows(path: str | Path) -> list[Row]:
    """Offers from a JSON file: a list of rows (``--raw`` output) or ``{"offers": [...]}``.

    Rows are taken as they are; only ``dph_base`` is derived from ``dph_total`` when missing,
    because searches reprice every row for the queried storage.
    """
    doc = json.loads(Path(path).read_text("utf-8"))
    rows = doc["offers"] if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of offers")
    return [_with_base_price(dict(row)) for row in rows]


def _with_base_price(row: Row) -> Row:
    row.setdefault("storage_cost", 0.2)
    if "dph_base" not in row:
        storage = row["storage_cost"] * DEFAULT_ALLOCATED_STORAGE / HOURS_PER_MONTH
        row["dph_base"] = max(0.0, float(row.get("dph_total", 0.0)) - storage)
    row.setdefault("min_bid", row["dph_base"])
    row.setdefault("rentable", True)
    row.setdefault("rented", False)
    return row


class IdSequence:
    """Increasing, irregular ids (like the real ones) drawn from a seeded RNG."""

    def __init__(self, rng: random.Random, start: int) -> None:
        self._rng = rng
        self._next = start + rng.randrange(1_000_000)

    def __call__(self) -> int:
        value = self._next
        self._next += self._rng.randint(1, 97)
        return value


def seeded_offers(rows: Iterable[Row], rng: random.Random, next_id: Callable[[], int]) -> list[Row]:
    """The packaged rows turned into a market: shuffled, repriced by ±15 %, ids assigned.

    Reliability moves by at most ±0.005 so filters such as ``reliability>0.98`` keep roughly
    the real proportion of hosts.
    """
    market = [dict(row) for row in rows]
    rng.shuffle(market)
    for row in market:
        factor = rng.uniform(0.85, 1.15)
        row["dph_base"] = round(row["dph_base"] * factor, 6)
        row["min_bid"] = round(min(row["min_bid"] * factor, row["dph_base"]), 6)
        for key in ("reliability", "reliability2"):
            row[key] = round(min(1.0, max(0.0, row[key] + rng.uniform(-0.005, 0.005))), 7)
    return [list_offer(row, next_id(), start_date=1_730_000_000.0) for row in market]


def list_offer(row: Mapping[str, Any], offer_id: int, *, start_date: float) -> Row:
    """``row`` as a fresh listing with id ``offer_id`` (ids and host address are per listing)."""
    offer = dict(row)
    machine = int(offer.get("machine_id") or offer_id)
    offer.update(
        id=offer_id,
        ask_contract_id=offer_id,
        bundle_id=offer_id * 7 + 13,
        public_ipaddr=f"{_TEST_NETS[machine % 3]}.{machine % 254 + 1}",
        start_date=start_date,
        rentable=True,
        rented=False,
    )
    offer.setdefault("external", None)
    offer.setdefault("vericode", 1 if offer.get("verification") == "verified" else 0)
    return _with_base_price(offer)


def complete_offer(partial: Mapping[str, Any], template: Row, offer_id: int) -> Row:
    """A full offer from a few fields (``gpu_name``, ``dph_total``, ``geolocation``…).

    Missing fields come from ``template``. A given ``dph_total`` is read as the price at the
    default 5 GB of storage; ``min_bid`` defaults to 90 % of the GPU price so that a partial
    offer never has a floor above its own on-demand price.
    """
    row = {**template, **partial}
    if "dph_base" not in partial:
        if "dph_total" in partial:
            storage = row["storage_cost"] * DEFAULT_ALLOCATED_STORAGE / HOURS_PER_MONTH
            row["dph_base"] = max(0.0, float(partial["dph_total"]) - storage)
        row.pop("dph_total", None)
    if "min_bid" not in partial:
        row["min_bid"] = round(row["dph_base"] * 0.9, 6)
    if "gpu_total_ram" not in partial:
        row["gpu_total_ram"] = row["gpu_ram"] * row["num_gpus"]
    return list_offer(row, offer_id, start_date=float(template.get("start_date") or 0.0))


# ---------------------------------------------------------------------------------------------
# Pricing a row for one search


def price_offer(row: Row, *, bid: bool, allocated_storage: float, now: float) -> Row:
    """The row as a search returns it: prices for ``allocated_storage`` GB, at ``min_bid`` for
    bids, with the derived cost/performance columns and the ``search``/``instance`` summaries."""
    gpu = float(row["min_bid"] if bid else row["dph_base"])
    disk_hour = float(row["storage_cost"]) * allocated_storage / HOURS_PER_MONTH
    total = gpu + disk_hour
    per_dollar = 1.0 / total if total > 0 else 0.0
    offer = dict(row)
    offer.update(
        dph_total=total,
        dph_total_adj=total,
        discounted_dph_total=total,
        storage_total_cost=disk_hour,
        is_bid=bid,
        dlperf_per_dphtotal=float(row.get("dlperf") or 0.0) * per_dollar,
        flops_per_dphtotal=float(row.get("total_flops") or 0.0) * per_dollar,
        vram_costperhour=total / max(1.0, float(row.get("gpu_total_ram") or 1.0)),
        end_date=now + float(row.get("duration") or 0.0),
        search=_cost_summary(gpu, disk_hour),
        instance=_cost_summary(0.0, disk_hour),
        time_remaining="",
        time_remaining_isbid="",
    )
    return offer


def _cost_summary(gpu: float, disk_hour: float) -> dict[str, float]:
    return {
        "gpuCostPerHour": gpu,
        "diskHour": disk_hour,
        "totalHour": gpu + disk_hour,
        "discountTotalHour": 0,
        "discountedTotalPerHour": gpu + disk_hour,
    }


# ---------------------------------------------------------------------------------------------
# The query language


def parse_offer_query(body: Any) -> OfferQuery:
    """Split a search body into conditions and control keys (``vast-api.md`` §3.1).

    A bare value (``{"rentable": true}``) means ``eq``. Raises ``QueryError`` for a body that
    is not an object, with the real API's message.
    """
    if not isinstance(body, dict):
        raise QueryError("Invalid query: must be dict of conditions")
    conditions = {
        field: spec if isinstance(spec, dict) else {"eq": spec}
        for field, spec in body.items()
        if field not in _CONTROL_KEYS
    }
    return OfferQuery(
        conditions=conditions,
        order=parse_order(body.get("order")),
        limit=_parse_limit(body.get("limit")),
        bid=body.get("type") in ("bid", "interruptible"),
        allocated_storage=_to_float(body.get("allocated_storage"), DEFAULT_ALLOCATED_STORAGE),
    )


def parse_order(order: Any) -> list[tuple[str, bool]]:
    """``[["dph_total","asc"], ...]`` (or bare field names) as ``(field, descending)`` pairs."""
    if not isinstance(order, list):
        return []
    pairs: list[tuple[str, bool]] = []
    for item in order:
        if isinstance(item, str):
            pairs.append((item, False))
        elif isinstance(item, list | tuple) and item and isinstance(item[0], str):
            direction = str(item[1]).lower() if len(item) > 1 else "asc"
            pairs.append((item[0], direction == "desc"))
    return pairs


def _parse_limit(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError):
        raise QueryError(f"Invalid limit: {value!r}") from None


def _to_float(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def country(geolocation: Any) -> str | None:
    """The ISO code ending ``"Texas, US"``, or None when the host has no location."""
    if not isinstance(geolocation, str) or not geolocation.strip():
        return None
    return geolocation.rsplit(",", 1)[-1].strip().upper()


def offer_column(row: Row, field: str) -> tuple[bool, Any]:
    """Resolve ``field`` on an offer, including the virtual columns the API computes."""
    if field == "verified":
        return True, row.get("verification") == "verified"
    if field == "geolocation":
        return True, country(row.get("geolocation"))
    if field == "datacenter":
        return True, row.get("hosting_type") == 1
    if field == "external":
        return True, bool(row.get("external"))
    if field in row:
        return True, row[field]
    return False, None


def stored_column(row: Row, field: str) -> tuple[bool, Any]:
    """Resolve ``field`` on a stored document (instances): plain lookup."""
    return (field in row), row.get(field)


def matches(row: Row, conditions: Mapping[str, Mapping[str, Any]], resolve: Resolver) -> bool:
    """True when ``row`` satisfies every condition; unknown fields and operators are ignored."""
    for field, spec in conditions.items():
        known, actual = resolve(row, field)
        if not known:
            continue
        for op, wanted in spec.items():
            if not _holds(op, actual, wanted, field):
                return False
    return True


def _holds(op: str, actual: Any, wanted: Any, field: str) -> bool:
    if field == "geolocation" and isinstance(wanted, str):
        wanted = wanted.upper()
    if field == "geolocation" and isinstance(wanted, list):
        wanted = [w.upper() if isinstance(w, str) else w for w in wanted]
    if op in ("in", "notin"):
        options = wanted if isinstance(wanted, list) else [wanted]
        found = any(_equal(actual, option) for option in options)
        return found if op == "in" else not found
    compare = _COMPARISONS.get(op)
    if compare is None:
        return True
    if field == "rented" and op == "eq" and coerce(True, wanted) is True:
        return True  # "rented: true" widens the search to machines we rent; it never narrows it
    wanted = coerce(actual, wanted)
    if op in ("eq", "neq"):
        return _equal(actual, wanted) == (op == "eq")
    try:
        return actual is not None and wanted is not None and bool(compare(actual, wanted))
    except TypeError:
        return False


def _equal(actual: Any, wanted: Any) -> bool:
    return bool(actual == coerce(actual, wanted))


def coerce(actual: Any, wanted: Any) -> Any:
    """``wanted`` converted to the type of the column it is compared with.

    The CLI sends every number as a string (``"1"``, ``"0.98"``) and booleans sometimes as
    strings; the real server compares them as numbers, so the simulator must too.
    """
    if isinstance(actual, bool):
        if isinstance(wanted, str):
            lowered = wanted.strip().lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
        elif isinstance(wanted, int | float) and not isinstance(wanted, bool):
            return bool(wanted)
        return wanted
    if isinstance(actual, int | float) and isinstance(wanted, str):
        try:
            return float(wanted)
        except ValueError:
            return wanted
    return wanted


def compare_values(a: Any, b: Any) -> int:
    """Three-way compare for sorting; mixed types compare as strings (never raise)."""
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        return int(str(a) > str(b)) - int(str(a) < str(b))


def compare_keys(a: Sequence[Any], b: Sequence[Any], descending: Sequence[bool]) -> int:
    """Three-way compare of sort keys column by column; nulls sort last in either direction."""
    for x, y, desc in zip(a, b, descending, strict=True):
        if x is None or y is None:
            if (x is None) != (y is None):
                return 1 if x is None else -1
            continue
        result = compare_values(x, y)
        if result:
            return -result if desc else result
    return 0


def sort_rows(rows: list[Row], order: Sequence[tuple[str, bool]], resolve: Resolver) -> list[Row]:
    """``rows`` sorted by ``order`` (columns unknown to every row are skipped)."""
    columns = [(f, desc) for f, desc in order if any(resolve(r, f)[0] for r in rows)]
    if not columns:
        return list(rows)
    descending = [desc for _, desc in columns]

    def key(row: Row) -> list[Any]:
        return [resolve(row, f)[1] for f, _ in columns]

    def cmp(a: Row, b: Row) -> int:
        return compare_keys(key(a), key(b), descending)

    return sorted(rows, key=functools.cmp_to_key(cmp))


def search(rows: Iterable[Row], query: OfferQuery, *, now: float) -> list[Row]:
    """The offers a search returns: priced, filtered, ordered, limited."""
    priced = (
        price_offer(row, bid=query.bid, allocated_storage=query.allocated_storage, now=now)
        for row in rows
    )
    found = [row for row in priced if matches(row, query.conditions, offer_column)]
    found = sort_rows(found, query.order, lambda r, f: (f in r, r.get(f)))
    return found if query.limit is None else found[: query.limit]
