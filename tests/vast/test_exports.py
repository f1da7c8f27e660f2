"""Pins the public surface of ``vk_trio.vast``: others code against exactly these names."""

from __future__ import annotations

import vk_trio.vast


def test_public_names_are_pinned() -> None:
    assert vk_trio.vast.__all__ == [
        "DEFAULT_INTERVALS",
        "CreateInstance",
        "CreateOutcomeUnknown",
        "CreatedInstance",
        "Instance",
        "InstanceNotFound",
        "InsufficientCredit",
        "Offer",
        "OfferGone",
        "Pacer",
        "PortBinding",
        "RateLimited",
        "RetryPolicy",
        "VastAuthError",
        "VastClient",
        "VastError",
        "VastInvalidRequest",
        "VastUnavailable",
    ]


def test_every_public_name_exists() -> None:
    missing = [name for name in vk_trio.vast.__all__ if not hasattr(vk_trio.vast, name)]
    assert missing == []
