"""What can go wrong reading an image's config from its registry, as types a pod can show.

::

    VkError
    └── RegistryError(image)
        ├── InvalidReference ──────── PermanentError   the image name itself cannot be parsed
        └── ImageConfigUnavailable ── TemporaryError   everything else, with a ``reason``:
              ImageNotFound            404 MANIFEST_UNKNOWN / NAME_UNKNOWN / BLOB_UNKNOWN
              ImageUnauthorized        401/403 even after authenticating (or no credentials)
              RegistryUnavailable      connection refused, timeout, 5xx/429, a broken exchange
              ImageInvalid             a manifest or config that is malformed or fails its digest
              ImagePlatformUnsupported an index without linux/amd64 (the message lists its own)

Why nearly everything is temporary: a kubelet retries a failed pull with a backoff and shows
the reason on the pod meanwhile; the tag may be pushed later, the secret fixed, the registry
brought back. Only a reference that cannot even be parsed is permanent (the kubelet's
``InvalidImageName``): no retry can change the pod's spec.

``reason`` is a kubelet-style waiting reason (CamelCase, stable); the message is one line that
names the image and never a credential or a token (it goes through :func:`vk_trio.logs.scrub`).
"""

from __future__ import annotations

from typing import Final

from vk_trio.errors import PermanentError, TemporaryError, VkError
from vk_trio.logs import scrub

__all__ = [
    "IMAGE_INVALID",
    "IMAGE_NOT_FOUND",
    "IMAGE_PLATFORM_UNSUPPORTED",
    "IMAGE_UNAUTHORIZED",
    "REGISTRY_UNAVAILABLE",
    "ImageConfigUnavailable",
    "InvalidReference",
    "RegistryError",
]

IMAGE_NOT_FOUND: Final = "ImageNotFound"
IMAGE_UNAUTHORIZED: Final = "ImageUnauthorized"
REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"
IMAGE_INVALID: Final = "ImageInvalid"
IMAGE_PLATFORM_UNSUPPORTED: Final = "ImagePlatformUnsupported"

MAX_MESSAGE = 300
"""A registry's error text can be long; a pod condition needs only the gist."""


def _one_line(text: str) -> str:
    line = " ".join(scrub(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


class RegistryError(VkError):
    """Reading the config of ``image`` (the reference as the pod wrote it) failed."""

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(_one_line(message))
        self.image = image


class InvalidReference(RegistryError, PermanentError):
    """The image reference is not one Docker would accept (kubelet: ``InvalidImageName``)."""

    reason: Final = "InvalidImageName"


class ImageConfigUnavailable(RegistryError, TemporaryError):
    """The config could not be read now; ``reason`` says why, ``delay`` when to come back
    (only set when the registry said so with ``Retry-After``)."""

    def __init__(
        self,
        message: str,
        *,
        image: str,
        reason: str,
        status: int | None = None,
        delay: float | None = None,
    ) -> None:
        super().__init__(message, image=image)
        self.reason = reason
        self.status = status
        self.delay = delay
