"""Kubernetes resource quantities (``apimachinery/pkg/api/resource``): ``"1Gi"``, ``"500m"``.

Parsed exactly (a :class:`~fractions.Fraction`), because the kubelet rounds *up* when it turns
a quantity into a whole number (``Quantity.Value``, ``MilliValue``), and a float would turn
``"0.1"`` into a value just above or below the true one.

No I/O happens in this module.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["milli_value", "parse_quantity", "value"]

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_SUFFIXES: dict[str, Fraction] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


def parse_quantity(text: str | float) -> Fraction:
    """The exact amount ``text`` stands for; ValueError if it is not a quantity.

    A bare number is accepted too: the API's schema allows one, though it sends strings.
    """
    if isinstance(text, int | float):
        return Fraction(text)
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES.get(suffix, Fraction(1))


def value(quantity: Fraction) -> int:
    """``Quantity.Value()``: the amount rounded up to a whole number."""
    return math.ceil(quantity)


def milli_value(quantity: Fraction) -> int:
    """``Quantity.MilliValue()``: the amount in thousandths, rounded up."""
    return math.ceil(quantity * 1000)
