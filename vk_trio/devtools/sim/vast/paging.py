"""Keyset paging of ``GET /api/v1/instances/``: order, page size, tokens, column selection."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import msgspec

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.config import PAGE_SIZE
from vk_trio.devtools.sim.vast.market import Row


def parse_order_by(order: Any) -> list[tuple[str, bool]]:
    """``[{"col":"id","dir":"asc"}]`` as ``(column, descending)`` pairs, ``id`` appended last."""
    if not isinstance(order, list):
        raise ValueError("order_by must be a list")
    pairs = [
        (str(item["col"]), str(item.get("dir", "asc")).lower() == "desc")
        for item in order
        if isinstance(item, dict) and "col" in item
    ] or market.parse_order([i for i in order if not isinstance(i, dict)])
    if all(col != "id" for col, _ in pairs):
        pairs.append(("id", False))
    return pairs


@dataclass
class PagedWalk:
    """The rows a paged listing's first page found (filtered and sorted), and when."""

    at: float
    rows: list[Row]
    labels: dict[str, int]


def parse_page_limit(raw: str | None) -> int:
    """``limit`` as the API applies it: ``PAGE_SIZE`` by default and at most, 5 if not positive."""
    if raw is None or raw == "":
        return PAGE_SIZE
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError("limit must be an integer") from None
    return 5 if limit <= 0 else min(limit, PAGE_SIZE)


def keyset_page(
    rows: list[Row],
    order: list[tuple[str, bool]],
    token: str | None,
    limit: int,
    resolve: market.Resolver = market.stored_column,
) -> tuple[list[Row], str | None]:
    """One page of sorted ``rows`` after ``token``, and the token for the next page (or None).

    The token is the last row's sort key (a keyset cursor, as the real one is documented to
    be), so pages stay consistent while instances come and go between calls. Raises
    ``ValueError`` for a token that is not one of ours.
    """
    descending = [desc for _, desc in order]

    def key(row: Row) -> list[Any]:
        return [resolve(row, col)[1] for col, _ in order]

    start = 0
    if token:
        after = _decode_token(token, len(order))
        if after is None:
            raise ValueError(token)
        # ``rows`` are sorted by ``order``: the first row past the cursor, by bisection.
        low, high = 0, len(rows)
        while low < high:
            middle = (low + high) // 2
            if market.compare_keys(key(rows[middle]), after, descending) > 0:
                high = middle
            else:
                low = middle + 1
        start = low
    page = rows[start : start + limit]
    return page, _encode_token(key(page[-1])) if len(rows) > start + limit else None


def _encode_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def _decode_token(token: str, width: int) -> list[Any] | None:
    try:
        key = msgspec.json.decode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, msgspec.DecodeError):
        return None
    return key if isinstance(key, list) and len(key) == width else None


def select_columns(row: Row, select: Any) -> Row:
    """``select_cols``: the named columns only (unknown ones null), everything for ``*``."""
    if not isinstance(select, list) or "*" in select:
        return row
    return {str(col): row.get(str(col)) for col in select}
