"""Buying and destroying instances: the two operations that cost or save money.

Both follow one rule: once a request that can change what we pay has been sent, nothing
may abandon it halfway.

- A buy, once sent, runs shielded with its own deadline (the client shields the request after
  its pacer slot): a pod deleted meanwhile must still learn the new instance's id so that it
  can be destroyed. If the answer is lost anyway (a timeout, a dropped connection), the
  instance is looked up by its label, which carries the pod UID, before anything else is
  bought.
- A destroy runs shielded with its own deadline, and is verified: an instance is gone only
  when a fresh instance sweep no longer shows it. Vast's "not found" counts as gone.

Nothing here talks to Kubernetes; the supervisor reports what happened.
"""

from __future__ import annotations

import trio
from loguru import logger

from vk_trio.errors import TemporaryError
from vk_trio.pods.poller import InstancePoller
from vk_trio.vast import (
    CreatedInstance,
    CreateInstance,
    CreateOutcomeUnknown,
    Instance,
    Offer,
    VastClient,
)

LOOKUP_ATTEMPTS = 4
LOOKUP_INTERVAL = 3.0
"""A create whose answer was lost is looked up this many times, this far apart, because a
just-created instance may take a moment to show in the list."""


class BuyResult:
    """An instance that now exists for the pod (``started`` False: created stopped)."""

    def __init__(self, instance_id: int, *, started: bool, recovered: bool = False) -> None:
        self.instance_id = instance_id
        self.started = started
        self.recovered = recovered
        """True when the create's answer was lost and the id came from a label lookup."""


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
        return BuyResult(found.id, started=True, recovered=True)
    return BuyResult(created.instance_id, started=created.started)


async def _lookup_after_lost_answer(vast: VastClient, label: str) -> Instance | None:
    """The instance a lost create made, if any, after ``LOOKUP_ATTEMPTS`` answered lists.

    Only answered lists count: while listing fails, nothing can be known, and returning None
    would let the caller buy again, so it keeps trying (a pod deleted meanwhile cancels this;
    its teardown destroys by the same label). Not shielded, for that reason.
    """
    answered = 0
    while True:
        try:
            found = await vast.find_by_label(label)
        except TemporaryError as exc:
            logger.warning("cannot look the lost instance up yet", label=label, error=str(exc))
            await trio.sleep(LOOKUP_INTERVAL)
            continue
        if found:
            return max(found, key=lambda i: i.id)
        answered += 1
        if answered == LOOKUP_ATTEMPTS:
            return None
        await trio.sleep(LOOKUP_INTERVAL)


async def destroy_all(
    vast: VastClient,
    poller: InstancePoller,
    uid: str,
    known: set[int],
    *,
    deadline: float,
    keep: int | None = None,
) -> int:
    """Destroy every instance of pod ``uid`` but ``keep`` (plus ``known`` ids); verify it.

    What exists is read from the shared poller (a fresh sweep serves every pod being torn
    down, so this costs list pages, not list calls per pod). Each batch of destroy calls runs
    shielded with its own ``deadline`` (seconds): a cancelled caller still frees the GPUs it
    asked to free. The waits for sweeps are not shielded: a stopping process leaves the
    verification to the next one. Returns how many destroy calls were made; raises
    ``trio.TooSlowError`` or a Vast error so that the caller retries later.
    """
    destroyed = 0
    while True:
        await poller.fresh()
        ids = (known | {instance.id for instance in poller.instances(uid)}) - {keep}
        if not ids:
            return destroyed
        with trio.CancelScope(shield=True), trio.fail_after(deadline):
            for instance_id in sorted(ids):
                await vast.destroy_instance(instance_id)
                logger.info("instance destroyed", instance_id=instance_id, uid=uid)
                destroyed += 1
        known = set()
