"""``GET /version``: the API server's version, which the node's kubelet version follows.

The version skew policy lets a kubelet be up to three minors older than the API server,
never newer; version-gated behaviour and ``kubectl get nodes`` read the Node's
``kubeletVersion``. vk-trio implements no one kubelet release, so it reports the API server's
own ``major.minor`` with patch ``0`` (skew is counted in minors: ``.0``, the minor's first
release, claims no patch's fixes) and its own version as the suffix:
``v1.36.0-vk-trio-0.1.0``. Every caller may read it: ``/version`` is public
(``system:public-info-viewer``).
"""

from __future__ import annotations

import re

import msgspec

from vk_trio import __version__
from vk_trio.kube.api import KubeClient

__all__ = ["DEFAULT_KUBELET_VERSION", "ServerVersion", "get_server_version", "kubelet_version"]

DEFAULT_KUBELET_VERSION = f"v1.31.0-vk-trio-{__version__}"
"""Reported when the API server's version cannot be read."""


class ServerVersion(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    """The fields of ``version.Info`` vk-trio reads."""

    major: str = ""
    minor: str = ""
    git_version: str = ""


async def get_server_version(client: KubeClient) -> ServerVersion:
    """The API server's version (``GET /version``)."""
    return msgspec.convert(await client.request("GET", "/version"), ServerVersion)


def kubelet_version(server: ServerVersion) -> str | None:
    """The kubelet version to report next to ``server``, or None if it names no version.

    Managed clusters write ``minor`` with a suffix (EKS and GKE answer ``"32+"``), so only
    its leading digits count; without ``major``/``minor`` the ``gitVersion`` is read."""
    major, minor = _digits(server.major), _digits(server.minor)
    if major is None or minor is None:
        found = re.match(r"v(\d+)\.(\d+)", server.git_version)
        if found is None:
            return None
        major, minor = found.group(1), found.group(2)
    return f"v{int(major)}.{int(minor)}.0-vk-trio-{__version__}"


def _digits(text: str) -> str | None:
    found = re.match(r"\d+", text)
    return found.group(0) if found else None
