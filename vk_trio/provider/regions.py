"""Region names → ISO country codes, as the Vast CLI groups them.

Vast's search filters on country codes only (``{"geolocation": {"in": ["US", "CA"]}}``); region
names exist only client-side. The tables are the CLI's ``REGIONS`` (vastai 1.9.1,
``api/offers.py``, ``vast-api.md`` §6), so ``vast.ai/region: "North America"`` means exactly
what ``vastai launch instance -r North_America`` means, and a user can check one against the
other. The SDK's shorter ``_regions`` table has known quirks (AR under Asia, non-ISO codes) and
is deliberately not used.

No I/O happens in this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


REGIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "North America": _codes(
            "AG BS BB BZ CA CR CU DM DO SV GD GT HT HN JM MX NI PA KN LC VC TT US"
        ),
        "South America": _codes("AR BO BR CL CO EC FK GF GY PY PE SR UY VE"),
        "Europe": _codes(
            "AL AD AT BY BE BA BG HR CY CZ DK EE FI FR DE GR HU IS IE IT LV LI LT LU MT MD MC ME"
            " NL MK NO PL PT RO RU SM RS SK SI ES SE CH UA GB VA XK"
        ),
        "Asia": _codes(
            "AF AM AZ BH BD BT BN KH CN GE IN ID IR IQ IL JP JO KZ KW KG LA LB MY MV MN MM NP KP"
            " OM PK PH QA SA SG KR LK SY TW TJ TH TL TR TM AE UZ VN YE HK MO"
        ),
        "Oceania": _codes(
            "AS AU CK FJ PF GU KI MH FM NR NC NZ NU MP PW PG PN WS SB TK TO TV VU WF"
        ),
        "Africa": _codes(
            "DZ AO BJ BW BF BI CV CM CF TD KM CG CD CI DJ EG GQ ER SZ ET GA GM GH GN GW KE LS LR LY"
            " MG MW ML MR MU MA MZ NA NE NG RW ST SN SC SL SO ZA SS SD TZ TG TN UG ZM ZW"
        ),
    }
)
"""Display name → country codes. Keys are the names users write (and messages print)."""

_SEPARATORS = re.compile(r"[\s_\-]+")


def _fold(name: str) -> str:
    """Fold "north_america", "North-America" and " NORTH  AMERICA " alike."""
    return _SEPARATORS.sub("", name).casefold()


_BY_FOLDED: Mapping[str, str] = MappingProxyType({_fold(name): name for name in REGIONS})


def region_name(text: str) -> str | None:
    """The region name ``text`` spells, ignoring case, spaces, ``_`` and ``-``; else None."""
    return _BY_FOLDED.get(_fold(text))
