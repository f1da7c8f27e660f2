"""Pins the public surface of ``vk_trio.registry``: others code against exactly these names."""

from __future__ import annotations

import vk_trio.registry


def test_public_names_are_pinned() -> None:
    assert vk_trio.registry.__all__ == [
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


def test_every_public_name_exists() -> None:
    missing = [name for name in vk_trio.registry.__all__ if not hasattr(vk_trio.registry, name)]
    assert missing == []
