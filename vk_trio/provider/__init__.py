"""The Vast provider: ``vk_trio.node.provider.Provider`` implemented over ``vk_trio.vast``.

``requirements`` (annotations → what the pod needs), ``selection`` (query, local re-checks,
ranking), ``regions``, ``spec`` (pod spec → create request), ``labels`` (instance ↔ pod),
``market`` (shared searches, offer claims), ``budget`` (the node's spend cap), ``buying``,
``instances`` (create with lost-answer lookup, verified destroy), ``poller`` (one sweep feeds
every pod), ``observing`` (Vast statuses → observations), ``reaper`` (orphans), and
``vast_provider`` which puts them together.
"""

from vk_trio.provider.vast_provider import VastProvider

__all__ = ["VastProvider"]
