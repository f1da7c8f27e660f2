"""Field and label selectors, parsed once per request and matched against plain JSON objects.

Field selectors are generic dotted paths (``spec.nodeName``, ``involvedObject.uid``,
``status.phase``) compared as strings, a missing field being ``""``; the real API server accepts
only a per-kind allow-list, but every field the node and kubectl use is on it, and a stand-in
that accepts more never breaks a client. Label selectors support the whole set-based grammar
(``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) because it is short.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[Mapping[str, Any]], bool]

_SET_TERM = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest."""


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms if t.strip()]


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _equality(term: str) -> tuple[str, bool, str] | None:
    """``key=value``, ``key==value`` or ``key!=value`` as (key, wanted equal, value)."""
    for operator, equal in (("!=", False), ("==", True), ("=", True)):
        key, found, value = term.partition(operator)
        if found:
            return key.strip(), equal, value.strip()
    return None


def parse_field_selector(text: str | None) -> Matcher:
    """A predicate for ``fieldSelector``; empty or ``None`` matches everything."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text or ""):
        parsed = _equality(term)
        if parsed is None:
            raise SelectorError(f"invalid field selector term {term!r}")
        checks.append(parsed)

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, key) == value) == equal for key, equal, value in checks)

    return matches


def _label_check(term: str) -> Callable[[Mapping[str, str]], bool]:
    set_term = _SET_TERM.match(term)
    if set_term:
        key, operator, values_text = set_term.groups()
        values = {v.strip() for v in values_text.split(",") if v.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    parsed = _equality(term)
    if parsed is not None:
        key, equal, value = parsed
        return lambda labels: (labels.get(key) == value) == equal
    if term.startswith("!"):
        return lambda labels: term[1:].strip() not in labels
    if re.fullmatch(r"[\w./-]+", term):
        return lambda labels: term in labels
    raise SelectorError(f"invalid label selector term {term!r}")


def parse_label_selector(text: str | None) -> Matcher:
    """A predicate for ``labelSelector`` on ``metadata.labels``; empty matches everything."""
    checks = [_label_check(term) for term in _split_terms(text or "")]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches
