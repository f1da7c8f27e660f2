"""The Vast.ai side of vk-trio: an async, paced, retrying API client and its typed models.

Only what is listed in ``__all__`` is public; ``tests/vast/test_exports.py`` pins the list.
This package never imports ``vk_trio.kube`` or ``vk_trio.node`` or ``vk_trio.provider``.
"""

from vk_trio.retry import RetryPolicy as RetryPolicy
from vk_trio.vast.client import VastClient as VastClient
from vk_trio.vast.errors import CreateOutcomeUnknown as CreateOutcomeUnknown
from vk_trio.vast.errors import InstanceNotFound as InstanceNotFound
from vk_trio.vast.errors import InsufficientCredit as InsufficientCredit
from vk_trio.vast.errors import OfferGone as OfferGone
from vk_trio.vast.errors import RateLimited as RateLimited
from vk_trio.vast.errors import VastAuthError as VastAuthError
from vk_trio.vast.errors import VastError as VastError
from vk_trio.vast.errors import VastInvalidRequest as VastInvalidRequest
from vk_trio.vast.errors import VastUnavailable as VastUnavailable
from vk_trio.vast.models import CreatedInstance as CreatedInstance
from vk_trio.vast.models import CreateInstance as CreateInstance
from vk_trio.vast.models import Instance as Instance
from vk_trio.vast.models import Offer as Offer
from vk_trio.vast.models import PortBinding as PortBinding
from vk_trio.vast.pacer import DEFAULT_INTERVALS as DEFAULT_INTERVALS
from vk_trio.vast.pacer import Pacer as Pacer

__all__ = [
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
