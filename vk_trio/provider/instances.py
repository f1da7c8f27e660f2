"""Buying and destroying instances: the two operations that cost or save money.

Both follow one rule: once a request that can change what we pay has been sent, nothing
may abandon it halfway.

- A buy, once sent, runs shielded with its own deadline (the client shields the request after
  its pacer slot): a pod deleted meanwhile must still learn the new instance's id so that it
  can be destroyed. If the answer is lost anyway (a timeout, a dropped connection), the
  instance is looked up by its label, which carries the pod UID, before anything else is
  bought.
- A destroy, once its pacer slot is taken, runs shielded with its own deadline (the time
  queued for the slot is not part of it), and is verified: an instance is gone only when a
  fresh instance sweep no longer shows it. Vast's "not found" counts as gone.

Nothing here talks to Kubernetes; the provider reports what happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import trio
from loguru import logger

from vk_trio.provider.poller import InstancePoller
from vk_trio.retry import (
    LOST_CREATE_LOOKUP,
    LOST_CREATE_LOOKUPS,
    TRANSIENT,
    log_retry,
    retry_until_done,
)
from vk_trio.vast import (
    CreatedInstance,
    CreateInstance,
    CreateOutcomeUnknown,
    Instance,
    Offer,
    VastClient,
)


class BuyResult(NamedTuple):
    """An instance that now exists for the pod (``started`` False: created stopped)."""

    instance_id: int
    started: bool


async def buy(vast: VastClient, offer: Offer, request: CreateInstance) -> BuyResult | None:
    """Create an instance from ``offer``; None when no instance was created.

    Raises ``OfferGone`` (try the next offer) and the client's other errors when Vast refused
    the request. Returns None only when the answer was lost *and* no instance with the
    request's label appeared, so the caller may try again.
    """
    try:
        created: CreatedInstance = await vast.create_instance(offer.id, request)
    except CreateOutcomeUnknown as exc:
        logger.warning(
            "buy_instance: answer lost, looking the instance up by label",
            offer_id=offer.id,
            error=str(exc),
        )
        found = await _lookup_after_lost_answer(vast, request.label)
        if found is None:
            return None
        return BuyResult(found.id, started=True)
    return BuyResult(created.instance_id, created.started)


async def _lookup_after_lost_answer(vast: VastClient, label: str) -> Instance | None:
    """The instance a lost create made, if any, after ``LOST_CREATE_LOOKUPS`` answered lists
    (``vk_trio.retry.LOST_CREATE_LOOKUP`` apart).

    Only answered lists count: while listing fails, nothing can be known, and returning None
    would let the caller buy again, so it keeps trying (a pod deleted meanwhile cancels this;
    its teardown destroys by the same label). Not shielded, for that reason.
    """
    waits = LOST_CREATE_LOOKUP.delays()
    for answered in range(1, LOST_CREATE_LOOKUPS + 1):
        found = await retry_until_done(
            lambda: vast.find_by_label(label),
            schedule=LOST_CREATE_LOOKUP,
            on=TRANSIENT,
            on_retry=log_retry("cannot look the lost instance up yet", label=label),
        )
        if found:
            return max(found, key=lambda i: i.id)
        if answered < LOST_CREATE_LOOKUPS:
            await trio.sleep(waits.next())
    return None


async def destroy_all(
    vast: VastClient,
    poller: InstancePoller,
    uid: str,
    *,
    http_timeout: float,
    keep: int | None = None,
    known: Iterable[int] = (),
) -> int:
    """Destroy every instance of pod ``uid`` but ``keep``, plus ``known`` ids (just created,
    maybe not listed yet), and verify it; return how many destroy calls were made.

    What exists is read from the shared poller (a fresh sweep serves every pod being torn
    down, so this costs list pages, not list calls per pod). Each destroy call is shielded
    for at most ``http_timeout`` seconds once it leaves its pacer queue (see
    ``VastClient.destroy_instance``); the queue and the sweeps are not shielded, so a stopping
    process leaves what it did not send to the next one. Raises a ``VkError`` when Vast cannot
    be listed or a destroy fails, so that the caller retries later.
    """
    destroyed = 0
    while True:
        await poller.fresh()
        ids = ({instance.id for instance in poller.instances(uid)} | set(known)) - {keep}
        if not ids:
            return destroyed
        for instance_id in sorted(ids):
            await vast.destroy_instance(instance_id, http_timeout=http_timeout)
            logger.info("instance destroyed", instance_id=instance_id, uid=uid)
            destroyed += 1
        known = ()
