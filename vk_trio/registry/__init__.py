"""Image configs from container registries: what a kubelet would run for a pod without a
``command`` (ENTRYPOINT, CMD, ENV, WORKDIR, USER), read through the OCI distribution API.

Only what is listed in ``__all__`` is public; ``tests/registry/test_exports.py`` pins the list.
This package knows HTTP registries only: it never imports ``vk_trio.kube``, ``vast``,
``node``, ``provider`` or ``devtools``. A caller passes a pod's pull-secret credentials as a
``{registry: (user, password)}`` mapping (``vk_trio.provider.spec`` reads them).

``client`` has the lookup and the cache, ``session`` the HTTP exchange and authentication,
``auth`` the transport policy (https except on loopback) and challenges, ``reference`` the
image name grammar, ``models`` the JSON, ``errors`` the error kinds and their reasons.
"""

from vk_trio.registry.auth import base_url as base_url
from vk_trio.registry.client import RegistryClient as RegistryClient
from vk_trio.registry.client import image_config as image_config
from vk_trio.registry.errors import IMAGE_INVALID as IMAGE_INVALID
from vk_trio.registry.errors import IMAGE_NOT_FOUND as IMAGE_NOT_FOUND
from vk_trio.registry.errors import IMAGE_PLATFORM_UNSUPPORTED as IMAGE_PLATFORM_UNSUPPORTED
from vk_trio.registry.errors import IMAGE_UNAUTHORIZED as IMAGE_UNAUTHORIZED
from vk_trio.registry.errors import REGISTRY_UNAVAILABLE as REGISTRY_UNAVAILABLE
from vk_trio.registry.errors import ImageConfigUnavailable as ImageConfigUnavailable
from vk_trio.registry.errors import InvalidReference as InvalidReference
from vk_trio.registry.errors import RegistryError as RegistryError
from vk_trio.registry.models import ImageConfig as ImageConfig
from vk_trio.registry.models import ImageLayers as ImageLayers
from vk_trio.registry.reference import ImageReference as ImageReference
from vk_trio.registry.reference import parse_reference as parse_reference

__all__ = [
    "IMAGE_INVALID",
    "IMAGE_NOT_FOUND",
    "IMAGE_PLATFORM_UNSUPPORTED",
    "IMAGE_UNAUTHORIZED",
    "REGISTRY_UNAVAILABLE",
    "ImageConfig",
    "ImageConfigUnavailable",
    "ImageLayers",
    "ImageReference",
    "InvalidReference",
    "RegistryClient",
    "RegistryError",
    "base_url",
    "image_config",
    "parse_reference",
]
