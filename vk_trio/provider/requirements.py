"""A pod's requirements: from its ``vast.ai/*`` annotations to :class:`Requirements`.

The annotations are the user contract (seed README; the table is ``vk_trio.annotations.READ``),
and the GPU count comes from the chosen container's ``resources.limits["nvidia.com/gpu"]``.

:func:`parse_requirements` turns annotations into :class:`Requirements`, or raises one
:class:`AnnotationError` that lists *every* problem, each naming the annotation, the value and
what was expected (a pod spec is fixed by editing it, so say everything at once). What is
done with them (the search query, local re-checks, ranking) is ``selection``'s job.

No I/O happens in this module.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from vk_trio.annotations import (
    CONTAINER,
    DISK,
    GPU_FALLBACKS,
    GPU_TYPE,
    INTERRUPTIBLE,
    MEMORY,
    MIN_CUDA,
    MIN_RELIABILITY,
    ON_OUTBID,
    OUTBID_GRACE,
    PREFIX,
    PRICE_MAX,
    READ,
    REGION,
    STARTUP_TIMEOUT,
    VERIFIED,
)
from vk_trio.errors import PermanentError
from vk_trio.provider.regions import REGIONS, region_name

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_DISK_GB",
    "DEFAULT_MIN_RELIABILITY",
    "DEFAULT_ON_OUTBID",
    "DEFAULT_OUTBID_GRACE",
    "DEFAULT_VERIFIED",
    "GPU_LIMIT",
    "GPU_RESOURCE",
    "KNOWN_GPUS",
    "MAX_STARTUP_TIMEOUT",
    "OUTBID_POLICIES",
    "AnnotationError",
    "OutbidPolicy",
    "Requirements",
    "gpu_key",
    "parse_requirements",
    "unknown_gpu_hints",
    "usd",
]

ANNOTATIONS = tuple(a.key for a in READ if a.key != CONTAINER)
"""Every annotation this module reads (``vast.ai/container`` is read by ``spec``)."""
KNOWN_KEYS = frozenset(a.key for a in READ)

GPU_RESOURCE = "nvidia.com/gpu"
GPU_LIMIT = f'resources.limits["{GPU_RESOURCE}"]'

DEFAULT_DISK_GB = 20.0
"""The CLI defaults to 10 GB and the docs to 8, but a CUDA base image alone unpacks to 5-10 GB
and a PyTorch one to 15+; an instance that cannot pull its image is money spent on nothing.
Disk is cheap (``storage_cost`` is mostly $0.13-0.47 per GB per month, median $0.20),
and 1,385 of the 1,396 offers in the real November 2024 market have at least 20 GB free."""

DEFAULT_MIN_RELIABILITY = 0.9
"""The seed used 0.70, far below what the market offers. In the real market
(November 2024) the 10th percentile of ``reliability`` is 0.965, so 0.9 costs almost nothing in
choice (1,369 of 1,396 offers pass; 47 of the 49 single-GPU RTX 3060s) while excluding the
flaky tail."""

DEFAULT_VERIFIED = True
"""The CLI, the SDK and the server all default to verified hosts (``vast-api.md`` §3.1), and
unverified ones have not passed Vast's checks. The seed's example (RTX 3060 ≤ $0.30/h, North
America) still finds 7 verified RTX 3060 offers in the real market data, so the safe default
does not leave the documented example without offers. ``vast.ai/verified: "false"`` widens it."""

MAX_STARTUP_TIMEOUT = 24 * 3600.0
"""The longest ``vast.ai/startup-timeout`` accepted, in seconds. A large image on a slow host
takes tens of minutes to pull; an instance that has not started in a day will not, and every
hour of waiting is billed, so a longer value is far more likely a typo ("900h") than a wish."""


OutbidPolicy = Literal["wait", "rebid", "replace"]
OUTBID_POLICIES: tuple[OutbidPolicy, ...] = ("wait", "rebid", "replace")

DEFAULT_ON_OUTBID: OutbidPolicy = "wait"
"""An outbid instance keeps its disk (the pod's data) and bills only storage while stopped,
and Vast resumes it by itself when the price allows: waiting is the cheap choice that loses
nothing; a pod that must serve says ``replace``."""

DEFAULT_OUTBID_GRACE = 600.0
"""Seconds an outbid instance is kept for Vast to resume: long enough for a short price spike
to pass (the market moves in minutes), short enough that a pod is not dead for an hour."""


def usd(amount: float) -> str:
    """``$0.30``: dollars with at least two decimals, for messages."""
    text = f"{amount:.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


class AnnotationError(PermanentError):
    """The pod's annotations cannot be turned into requirements; editing the pod is the fix.

    ``problems`` holds one sentence per problem, each naming the annotation, the value given and
    what is expected, so an Event or the dry run can show all of them at once.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(dict.fromkeys(problems))  # "0,0" is one bad region, said once
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems:\n- " + "\n- ".join(self.problems)
        super().__init__(message)


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What a pod needs from an offer, in the API's units. Defaults are the module constants."""

    gpu_names: tuple[str, ...] = ()
    """Acceptable GPU models in preference order (primary first); empty means any GPU."""
    num_gpus: int = 1
    price_max: float | None = None
    """USD/hour for the whole instance: ``dph_total`` on demand, the bid when interruptible."""
    countries: frozenset[str] | None = None
    """ISO country codes the host must be in; None means anywhere."""
    region: str = "anywhere"
    """How the user named ``countries`` ("North America", "US, CA"), for messages."""
    min_gpu_ram_mb: float | None = None
    """Per GPU, in the API's MB (``gpu_ram``)."""
    disk_gb: float = DEFAULT_DISK_GB
    min_reliability: float = DEFAULT_MIN_RELIABILITY
    verified: bool = DEFAULT_VERIFIED
    min_cuda: float | None = None
    interruptible: bool = False
    startup_timeout: float | None = None
    """Seconds the instance may take from purchase to running; None means the node's default."""
    on_outbid: OutbidPolicy = DEFAULT_ON_OUTBID
    """What an outbid interruptible instance does: wait, raise the bid and wait, or replace."""
    outbid_grace: float = DEFAULT_OUTBID_GRACE
    """Seconds an outbid instance is kept for Vast to resume before it is given up."""

    def describe(self) -> str:
        """One line for events and the dry run, e.g. ``RTX 3060 (or RTX 4070) x1, <= $0.30/h``."""
        if self.gpu_names:
            gpus = self.gpu_names[0]
            if len(self.gpu_names) > 1:
                gpus += f" (or {', '.join(self.gpu_names[1:])})"
        else:
            gpus = "any GPU"
        parts = [f"{gpus} x{self.num_gpus}"]
        if self.price_max is not None:
            kind = "bid" if self.interruptible else "on-demand"
            parts.append(f"<= {usd(self.price_max)}/h {kind}")
        elif self.interruptible:
            parts.append("bid at min_bid")
        parts.append("anywhere" if self.countries is None else f"in {self.region}")
        if self.min_gpu_ram_mb is not None:
            parts.append(f">= {self.min_gpu_ram_mb:g} MB GPU RAM")
        parts.append(f"{self.disk_gb:g} GB disk")
        parts.append(f"reliability >= {self.min_reliability:g}")
        if self.verified:
            parts.append("verified")
        if self.min_cuda is not None:
            parts.append(f"CUDA >= {self.min_cuda:g}")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Parsing


def parse_requirements(
    annotations: Mapping[str, str], *, gpu_limit: str | None = None
) -> Requirements:
    """Requirements from a pod's annotations and its container's GPU limit (a quantity string).

    ``gpu_limit`` is the chosen container's ``resources.limits["nvidia.com/gpu"]`` (None when
    unset: one GPU). Raises :class:`AnnotationError` listing every malformed or contradictory
    value, and misspelt ``vast.ai/`` keys (``vast.ai/price_max``) that would otherwise be
    silently ignored.
    """
    problems: list[str] = []
    for key in annotations:
        if key.startswith(PREFIX) and key not in KNOWN_KEYS:
            meant = _KNOWN_BY_FOLD.get(_fold_key(key))
            if meant is not None:
                problems.append(f"{key}: unknown annotation; did you mean {meant}?")

    def raw(key: str) -> str | None:
        value = annotations.get(key)
        return None if value is None or not value.strip() else value

    gpu_names = _gpu_names(raw(GPU_TYPE), raw(GPU_FALLBACKS), problems)
    num_gpus = _gpu_count(gpu_limit, problems)
    price_max = _price(raw(PRICE_MAX), problems)
    countries, region = _region(raw(REGION), problems)
    memory = _size(raw(MEMORY), MEMORY, _MEMORY_UNITS_MB, _MEMORY_EXPECTED, problems)
    disk = _size(raw(DISK), DISK, _DISK_UNITS_GB, _DISK_EXPECTED, problems)
    reliability = _reliability(raw(MIN_RELIABILITY), problems)
    verified = _boolean(raw(VERIFIED), VERIFIED, problems)
    min_cuda = _cuda(raw(MIN_CUDA), problems)
    interruptible = _boolean(raw(INTERRUPTIBLE), INTERRUPTIBLE, problems)
    startup_timeout = _duration(raw(STARTUP_TIMEOUT), STARTUP_TIMEOUT, problems)
    on_outbid = _outbid_policy(raw(ON_OUTBID), price_max, problems)
    outbid_grace = _duration(raw(OUTBID_GRACE), OUTBID_GRACE, problems)
    if problems:
        raise AnnotationError(problems)
    return Requirements(
        gpu_names=gpu_names,
        num_gpus=num_gpus,
        price_max=price_max,
        countries=countries,
        region=region,
        min_gpu_ram_mb=memory,
        disk_gb=DEFAULT_DISK_GB if disk is None else disk,
        min_reliability=DEFAULT_MIN_RELIABILITY if reliability is None else reliability,
        verified=DEFAULT_VERIFIED if verified is None else verified,
        min_cuda=min_cuda,
        interruptible=bool(interruptible),
        startup_timeout=startup_timeout,
        on_outbid=on_outbid,
        outbid_grace=DEFAULT_OUTBID_GRACE if outbid_grace is None else outbid_grace,
    )


def _fold_key(key: str) -> str:
    return re.sub(r"[\s_.]+", "-", key.removeprefix(PREFIX).casefold())


_KNOWN_BY_FOLD = {_fold_key(key): key for key in KNOWN_KEYS}


_SHOWN = 80
"""Characters of a bad value quoted in a problem: enough to recognise it, while a 100 kB
annotation does not become a 100 kB Event or pod status message."""


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _bad(key: str, value: str, what: str) -> str:
    return f'{key}: "{_short(value)}" {what}'


def _finite(number: str) -> float | None:
    """``float`` of a digits-only match, or None when it is too large to be one ("9" * 400
    is ``inf``, which would pass every ``<=`` check and cannot be sent as JSON)."""
    value = float(number)
    return value if math.isfinite(value) else None


KNOWN_GPUS: tuple[str, ...] = (
    # Every model in the real marketplace capture (November 2024, 1,396 offers) ...
    "A10", "A100 PCIE", "A100 SXM4", "A100X", "A30", "A40", "GTX 1050 Ti", "GTX 1060",
    "GTX 1070", "GTX 1070 Ti", "GTX 1080", "GTX 1080 Ti", "GTX 1650", "GTX 1660", "GTX 1660 S",
    "GTX 1660 Ti", "H100 NVL", "H100 PCIE", "H100 SXM", "L4", "L40", "L40S", "Q RTX 5000",
    "Q RTX 6000", "Quadro K2200", "RTX 2060", "RTX 2060S", "RTX 2070", "RTX 2070S",
    "RTX 2080 Ti", "RTX 2080S", "RTX 3060", "RTX 3060 Ti", "RTX 3060 laptop", "RTX 3070",
    "RTX 3070 Ti", "RTX 3080", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti", "RTX 4000Ada",
    "RTX 4060", "RTX 4060 Ti", "RTX 4070", "RTX 4070 Ti", "RTX 4070S", "RTX 4070S Ti",
    "RTX 4080", "RTX 4080S", "RTX 4090", "RTX 5000Ada", "RTX 6000Ada", "RTX A2000",
    "RTX A4000", "RTX A5000", "RTX A6000", "Tesla P100", "Tesla T4", "Tesla V100", "Titan V",
    "Titan Xp",
    # ... and the models released since, which Vast lists under these names.
    "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090", "H200", "B200",
)  # fmt: skip
"""GPU names as Vast spells them: a pod's name is respelt to one of these when it differs only
in case or spacing ("rtx3090" is "RTX 3090"), and a name that matches none gets a "did you
mean" when no offer matches it. A name not listed is still searched for as written: Vast adds
models, and a new one must not be refused."""


def _normalise_gpu(name: str) -> str:
    """Spell a GPU name the way Vast does: ``_`` as spaces (as the CLI does, ``RTX_3090``),
    single spaces, and the listed spelling when only case or spacing differ (``rtx3090``)."""
    spaced = " ".join(name.replace("_", " ").split())
    return _KNOWN_BY_KEY.get(gpu_key(spaced), spaced)


def gpu_key(name: str) -> str:
    """What two GPU names must share to be the same model: "rtx_3060", "RTX3060" and
    "rtx 3060" are all "RTX 3060"."""
    return "".join(name.replace("_", " ").split()).casefold()


_KNOWN_BY_KEY = {gpu_key(name): name for name in KNOWN_GPUS}


def unknown_gpu_hints(req: Requirements) -> list[str]:
    """For each wanted GPU name Vast does not list, a hint naming the closest one it does."""
    hints = []
    for name in req.gpu_names:
        if gpu_key(name) in _KNOWN_BY_KEY:
            continue
        close = difflib.get_close_matches(gpu_key(name), list(_KNOWN_BY_KEY), n=1, cutoff=0.5)
        meant = f'; did you mean "{_KNOWN_BY_KEY[close[0]]}"?' if close else ""
        hints.append(f'"{_short(name)}" is not a GPU model Vast lists{meant}')
    return hints


def _gpu_names(primary: str | None, fallbacks: str | None, problems: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    if primary is not None:
        if "," in primary:
            problems.append(
                _bad(GPU_TYPE, primary, "names more than one GPU; expected one GPU name such as")
                + f' "RTX 3060" (list alternatives in {GPU_FALLBACKS})'
            )
        elif not _normalise_gpu(primary):  # only underscores: no name at all
            problems.append(_bad(GPU_TYPE, primary, 'is not a GPU name; expected e.g. "RTX 3060"'))
        else:
            names.append(_normalise_gpu(primary))
    if fallbacks is not None:
        if primary is None:
            problems.append(
                _bad(GPU_FALLBACKS, fallbacks, f"is set but {GPU_TYPE} is not;")
                + f" expected the preferred GPU in {GPU_TYPE} and alternatives here"
            )
        primary_key = gpu_key(names[0]) if names else None
        seen: set[str] = set()
        for item in fallbacks.split(","):
            name = _normalise_gpu(item)
            key = gpu_key(name)
            if not name:
                continue
            if key == primary_key:
                problems.append(
                    _bad(GPU_FALLBACKS, fallbacks, f'repeats {GPU_TYPE} "{_short(names[0])}";')
                    + " expected only alternatives to it"
                )
            elif key in seen:
                problems.append(
                    _bad(GPU_FALLBACKS, fallbacks, f'lists "{_short(name)}" twice;')
                    + " expected each GPU type once"
                )
            else:
                seen.add(key)
                names.append(name)
    return tuple(names)


def _gpu_count(limit: str | None, problems: list[str]) -> int:
    if limit is None:
        return 1
    text = limit.strip()
    if not re.fullmatch(r"\+?\d+", text):
        problems.append(
            _bad(GPU_LIMIT, limit, 'is not a whole number of GPUs; expected e.g. "1" or "2"')
        )
        return 1
    if len(text.lstrip("+0")) > _MAX_GPU_DIGITS:
        problems.append(_bad(GPU_LIMIT, limit, "is more GPUs than any machine has"))
        return 1
    count = int(text)
    if count < 1:
        problems.append(
            _bad(GPU_LIMIT, limit, "must be at least 1: every pod on this node rents a GPU")
        )
        return 1
    return count


_MAX_GPU_DIGITS = 4
"""Machines have at most a few dozen GPUs; more digits than this (Python refuses to convert
over 4,300 of them at all) is a typo, and is said so."""

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PRICE_EXPECTED = 'expected a number of USD per hour such as "0.30"'


def _price(value: str | None, problems: list[str]) -> float | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*\$?\s*" + _NUMBER + r"\s*", value)
    if match is None:
        problems.append(_bad(PRICE_MAX, value, f"is not a price; {_PRICE_EXPECTED}"))
        return None
    price = _finite(match[1])
    if price is None:
        problems.append(_bad(PRICE_MAX, value, f"is too large; {_PRICE_EXPECTED}"))
        return None
    if price <= 0:
        problems.append(_bad(PRICE_MAX, value, f"must be more than 0; {_PRICE_EXPECTED}"))
        return None
    return price


_AMBIGUOUS_CODES = {"EU": "Europe", "NA": "North America"}
"""Continent codes the SDK accepts; "NA" is also Namibia's ISO code, so ask for the name."""
_ANYWHERE = {"global", "any", "anywhere", "*"}


def _region(value: str | None, problems: list[str]) -> tuple[frozenset[str] | None, str]:
    """Region names and country codes, comma-separated; their union is where hosts may be."""
    if value is None or value.strip().casefold() in _ANYWHERE:
        return None, "anywhere"
    codes: set[str] = set()
    labels: list[str] = []
    for item in value.strip().strip("[]").split(","):
        item = item.strip()
        if not item:
            continue
        name = region_name(item)
        if name is not None:
            codes |= REGIONS[name]
            labels.append(name)
        elif item.upper() in _AMBIGUOUS_CODES:
            problems.append(
                _bad(REGION, value, f'uses "{item}", a continent code, not a country;')
                + f' expected the region by name, "{_AMBIGUOUS_CODES[item.upper()]}"'
            )
        elif re.fullmatch(r"[A-Za-z]{2}", item):
            codes.add(item.upper())
            labels.append(item.upper())
        else:
            names = ", ".join(f'"{name}"' for name in REGIONS)
            problems.append(
                _bad(REGION, value, f'has "{_short(item)}", which is not a region;')
                + f' expected one of {names}, country codes such as "US,CA", or "" for anywhere'
            )
    if not codes:
        return None, "anywhere"
    return frozenset(codes), ", ".join(labels)


_MEMORY_UNITS_MB = {
    # The API's "MB" are really MiB (an RTX 3060 has gpu_ram 12288). GB multiplies by 1000 as
    # the CLI does (so "12GB" = 12000 admits a 12288 card); Gi by 1024, the exact MiB count.
    "": 1000.0,
    "g": 1000.0,
    "gb": 1000.0,
    "gi": 1024.0,
    "gib": 1024.0,
    "m": 1.0,
    "mb": 1.0,
    "mi": 1.0,
    "mib": 1.0,
}
_MEMORY_EXPECTED = 'expected GPU memory per GPU such as "12GB", "12Gi" or "12000MB"'
_DISK_UNITS_GB = {
    "": 1.0,
    "g": 1.0,
    "gb": 1.0,
    "gi": 1.073741824,
    "gib": 1.073741824,
    "t": 1000.0,
    "tb": 1000.0,
    "ti": 1099.511627776,
    "tib": 1099.511627776,
}
_DISK_EXPECTED = 'expected disk space such as "50GB", "50Gi" or "50"'


def _size(
    value: str | None, key: str, units: Mapping[str, float], expected: str, problems: list[str]
) -> float | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*" + _NUMBER + r"\s*([A-Za-z]*)\s*", value)
    if match is None or match[2].casefold() not in units:
        problems.append(_bad(key, value, f"is not a size; {expected}"))
        return None
    number = _finite(match[1])
    size = None if number is None else number * units[match[2].casefold()]
    if size is None or not math.isfinite(size):
        problems.append(_bad(key, value, f"is too large; {expected}"))
        return None
    if size <= 0:
        problems.append(_bad(key, value, f"must be more than 0; {expected}"))
        return None
    return size


def _reliability(value: str | None, problems: list[str]) -> float | None:
    if value is None:
        return None
    expected = 'expected a fraction between 0 and 1 such as "0.95", or a percentage such as "95%"'
    match = re.fullmatch(r"\s*" + _NUMBER + r"\s*(%?)\s*", value)
    if match is None:
        problems.append(_bad(MIN_RELIABILITY, value, f"is not a reliability; {expected}"))
        return None
    number = _finite(match[1])
    reliability = None if number is None else number / (100.0 if match[2] else 1.0)
    if reliability is None or reliability > 1:
        problems.append(_bad(MIN_RELIABILITY, value, f"is more than 100%; {expected}"))
        return None
    return reliability


_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _boolean(value: str | None, key: str, problems: list[str]) -> bool | None:
    if value is None:
        return None
    folded = value.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    problems.append(_bad(key, value, 'is not a boolean; expected "true" or "false"'))
    return None


def _cuda(value: str | None, problems: list[str]) -> float | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", value)
    version = None if match is None else _finite(match[1])
    if version is None or version <= 0:
        problems.append(
            _bad(MIN_CUDA, value, 'is not a CUDA version; expected a version such as "12.1"')
        )
        return None
    return version


_AMOUNT = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(
    rf"(?P<bare>{_AMOUNT})|(?:(?P<h>{_AMOUNT})h)?(?:(?P<m>{_AMOUNT})m)?(?:(?P<s>{_AMOUNT})s)?"
)
_DURATION_EXPECTED = (
    'expected a duration above 0 and at most 24h such as "900" (seconds), "90s", "15m", "1h"'
    ' or "1h30m"'
)


def _outbid_policy(value: str | None, price_max: float | None, problems: list[str]) -> OutbidPolicy:
    if value is None:
        return DEFAULT_ON_OUTBID
    folded = value.strip().casefold()
    policy = next((p for p in OUTBID_POLICIES if p == folded), None)
    if policy is None:
        expected = ", ".join(f'"{p}"' for p in OUTBID_POLICIES)
        problems.append(_bad(ON_OUTBID, value, f"is not a policy; expected one of {expected}"))
        return DEFAULT_ON_OUTBID
    if policy == "rebid" and price_max is None:
        problems.append(
            f'{ON_OUTBID}: "rebid" raises the bid up to {PRICE_MAX}, which is not set; '
            f"set it (the most the pod may cost per hour) or choose another policy"
        )
    return policy


def _duration(value: str | None, key: str, problems: list[str]) -> float | None:
    """Seconds from "900", "90s", "15m", "1h30m": a bare number of seconds, or hours, minutes
    and seconds in that order (the subset of Go's ``time.ParseDuration`` kubectl users know)."""
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip().casefold())
    if match is None or not any(match.groups()):
        problems.append(_bad(key, value, f"is not a duration; {_DURATION_EXPECTED}"))
        return None
    seconds = float(match["bare"] or 0) + sum(
        float(match[unit] or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1))
    )
    if not 0 < seconds <= MAX_STARTUP_TIMEOUT:
        problems.append(_bad(key, value, f"is out of range; {_DURATION_EXPECTED}"))
        return None
    return seconds
