"""Who may be sent what: the URL scheme per registry, challenges, and credentials lookup.

**Transport.** TLS is always verified. Plain HTTP is used only for registries on loopback
(``localhost``, ``127.0.0.0/8``, ``::1``), which Docker also treats as insecure registries by
default; every other registry, token realm and redirect target must be ``https``, or the
exchange is refused before anything is sent (:func:`check_url`). There is no switch to allow
more: an image config carries what a pod will run, and credentials travel with the requests.

**Challenges.** A registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...`` (a token server to ask, Docker's token protocol) or ``Basic realm=...``;
:func:`parse_challenge` reads either.

**Credentials** come from the pod's image pull secrets as ``{registry: (user, password)}``,
keyed the way a docker config is (``docker.io``, ``https://index.docker.io/v1/``,
``ghcr.io``, ``localhost:5000``); :func:`find_credentials` normalises those keys, so any of
Docker Hub's names finds its credentials.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

import httpx
import msgspec

__all__ = [
    "Challenge",
    "base_url",
    "check_url",
    "find_credentials",
    "is_loopback",
    "parse_challenge",
]

_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


class Challenge(msgspec.Struct, frozen=True):
    """One ``WWW-Authenticate`` challenge: ``scheme`` lower-cased, its parameters as given."""

    scheme: str
    params: dict[str, str]


def is_loopback(host: str) -> bool:
    """``localhost``, an address in ``127.0.0.0/8``, or ``::1`` (brackets allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(registry: str) -> str:
    """``[::1]:5000`` → ``::1``; ``localhost:5000`` → ``localhost``; ``ghcr.io`` → itself."""
    if registry.startswith("["):
        return registry[1 : registry.find("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def base_url(registry: str) -> str:
    """``https://<registry>``, or ``http://`` for a loopback registry (see the module doc)."""
    scheme = "http" if is_loopback(_host_of(registry)) else "https"
    return f"{scheme}://{registry}"


def check_url(url: httpx.URL) -> str | None:
    """Why ``url`` must not be requested (plain HTTP off loopback, not HTTP at all), or None."""
    if url.scheme == "https":
        return None
    if url.scheme == "http" and is_loopback(url.host):
        return None
    return f"refusing {url.scheme}://{url.host}: only https leaves this machine"


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header, or None if there is none."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme or "=" in scheme:
        return None
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    params = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in params.items()}
    return Challenge(scheme=scheme.lower(), params=params)


def _normalise(server: str) -> str:
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", server.strip().lower()).split("/", 1)[0]
    return "docker.io" if host in _HUB_NAMES else host


def find_credentials(
    credentials: Mapping[str, tuple[str, str]] | None, registry: str
) -> tuple[str, str] | None:
    """The ``(user, password)`` for ``registry`` in a docker-config-like mapping, if any."""
    if not credentials:
        return None
    wanted = _normalise(registry)
    for server, pair in credentials.items():
        if _normalise(server) == wanted:
            return pair
    return None
