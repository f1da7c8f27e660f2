"""Field validation the real API server applies and the node can fall foul of.

Only rules a client of ours can break are checked, with the server's own words, so that the
code under test meets the same 422 it would meet on a cluster:

* EndpointSlice addresses (``pkg/apis/discovery/validation``: ``validateEndpoints``): an
  ``IPv4``/``IPv6`` slice's addresses must be IPs of that family and not special
  (``ValidateNonSpecialIP`` in ``pkg/apis/core/validation``): not unspecified, not loopback,
  not link-local, not link-local multicast.

Every function returns the field errors as ``<path>: Invalid value: "<value>": <detail>``
strings; ``aggregate`` joins them as the server's ``ErrorList.ToAggregate`` does.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

Obj = dict[str, Any]

LOOPBACK = "may not be in the loopback range (127.0.0.0/8, ::1/128)"
LINK_LOCAL = "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
LINK_LOCAL_MULTICAST = "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"

_LINK_LOCAL_MULTICAST_V4 = ipaddress.IPv4Network("224.0.0.0/24")


def _invalid(path: str, value: object, detail: str) -> str:
    return f"{path}: Invalid value: {json.dumps(value)}: {detail}"


def non_special_ip(address: str, path: str, *, allow_loopback: bool = False) -> list[str]:
    """``ValidateNonSpecialIP``: unspecified, loopback and link-local addresses are refused
    (the server says they are nonsensical or node-centric, e.g. the metadata service).

    ``allow_loopback`` lets loopback through: only for a stand-in whose simulated instances
    really listen on 127.0.0.1; a real API server has no such switch.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [_invalid(path, address, "must be a valid IP address")]
    errors = []
    if ip.is_unspecified:
        errors.append(_invalid(path, address, f"may not be unspecified ({address})"))
    if ip.is_loopback and not allow_loopback:
        errors.append(_invalid(path, address, LOOPBACK))
    if ip.is_link_local:
        errors.append(_invalid(path, address, LINK_LOCAL))
    if _link_local_multicast(ip):
        errors.append(_invalid(path, address, LINK_LOCAL_MULTICAST))
    return errors


def _link_local_multicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's ``IP.IsLinkLocalMulticast``: 224.0.0.0/24, or ff02::/16 (any ff?2 scope byte)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _LINK_LOCAL_MULTICAST_V4
    packed = ip.packed
    return packed[0] == 0xFF and packed[1] & 0x0F == 0x02


def endpoint_slice_errors(slice_: Obj, *, allow_loopback: bool = False) -> list[str]:
    """Why the server refuses this EndpointSlice's addresses (empty: it does not)."""
    family = slice_.get("addressType")
    versions = {"IPv4": 4, "IPv6": 6}
    errors: list[str] = []
    for i, endpoint in enumerate(slice_.get("endpoints") or []):
        addresses = endpoint.get("addresses") or []
        if not addresses:
            required = "Required value: must contain at least 1 address"
            errors.append(f"endpoints[{i}].addresses: {required}")
        for j, address in enumerate(addresses):
            path = f"endpoints[{i}].addresses[{j}]"
            if family not in versions:  # FQDN and unknown types are not checked here
                continue
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is None or ip.version != versions[family]:
                detail = f"must be a valid {family} address"
                errors.append(_invalid(path, address, detail))
                continue
            errors += non_special_ip(address, path, allow_loopback=allow_loopback)
    return errors


def aggregate(errors: list[str]) -> str:
    """One message for several field errors, as ``ToAggregate().Error()`` prints them."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
