"""Buying an instance for one pod: search, pick, hold budget, claim, record intent, create.

``Buyer.acquire`` loops until an instance exists, showing on the pod why it waits (no offers,
the price cap, the node's or the namespace's spend cap, the account's credit, a Vast outage, a
missing Secret).
Each turn:

1. search (shared by every pod with the same query, ``market.SharedSearches``) and re-check
   the offers locally (``selection.select``), leaving out machines that failed this pod;
2. unless the account's credit is too low for the cheapest (``account.CreditWatch``), for up
   to ``OFFERS_PER_SEARCH`` offers, best first: claim the offer against sibling pods, hold the
   price in the node budget and in the namespace's (``namespace_budget``: on the Namespace,
   shared by every node), build the create request from the pod spec;
3. write the intent (``vast.ai/buying``) on the pod; **no intent written, no create sent**: a
   process killed from here on must know to look for the instance before buying again;
4. create (shielded once sent; a lost answer is looked up by label, ``instances.buy``) and
   record what was bought on the pod.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import trio
from loguru import logger

from vk_trio import metrics
from vk_trio.annotations import BUYING, GPU, INSTANCE_ID, LOCATION, MACHINE_ID, OFFER_ID, PRICE
from vk_trio.config import Settings
from vk_trio.errors import PermanentError, TemporaryError, VkError
from vk_trio.kube.models import Pod
from vk_trio.logs import redact
from vk_trio.node.provider import Progress
from vk_trio.node.status import now_rfc3339
from vk_trio.provider.budget import Budget
from vk_trio.provider.instances import buy, destroy_all
from vk_trio.provider.market import OfferClaims, SharedSearches
from vk_trio.provider.namespace_budget import NAMESPACE_BUDGET_REACHED, NamespaceHolds
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.requirements import Requirements
from vk_trio.provider.selection import (
    Selection,
    bid_price,
    build_query,
    explain_query,
    offer_price,
    select,
)
from vk_trio.provider.spec import MissingReference, ObjectLookup, SpecError, instance_request
from vk_trio.retry import pod_backoff
from vk_trio.vast import InsufficientCredit, Offer, OfferGone, VastClient

__all__ = ["OFFERS_PER_SEARCH", "Buyer", "describe_offer"]

OFFERS_PER_SEARCH = 5
"""Offers tried, best first, before searching again (each taken offer costs a create call)."""

Wait = tuple[str, str]
"""(waiting reason, message): why the pod has no instance yet."""

TAKEN: Wait = ("SearchingOffers", "taken")
"""Every offer the last search found is being bought, or was bought, by this node's pods."""
TRIED: Wait = ("SearchingOffers", "tried")
"""``TAKEN``, after trying offers that were gone or refused."""
WAITERS_PER_LOOK = 100
"""Pods waiting for offers (every one of the last answer held by a sibling) that look again
per ``poll_fast``: with more waiting, each waits proportionally longer. Five thousand pods
each looking every 2 s spent the node's CPU on re-reading one answer, while buys free up
at the pace creates complete whoever looks."""

TAKEN_MESSAGE = "the offers found are being bought by this node's other pods; looking again"

CREDIT_LOW = "CreditLow"
"""The waiting reason while the account's credit is too low to buy (``account``)."""
RECHECKED_EACH_SWEEP = frozenset({"SpendCapReached", NAMESPACE_BUDGET_REACHED, CREDIT_LOW})
"""Waits that end when something else changes (room frees in the node's or the namespace's
budget when another pod's instance goes, credit is added): looked at again each slow sweep,
with no backoff."""

CreditCheck = Callable[[float], str | None]
"""Why a pod may not buy at a price (USD/h) for lack of credit, or None."""


class _Refused(NamedTuple):
    """A budget (the node's, the namespace's) refused the price; ``wait`` says why."""

    wait: Wait


def describe_offer(offer: Offer, price: float) -> str:
    where = (offer.geolocation or "").strip(" ,") or "unknown location"
    return (
        f"{offer.num_gpus}x {offer.gpu_name} at ${price:.3f}/h in {where} "
        f"(offer {offer.id}, machine {offer.machine_id})"
    )


def _location(offer: Offer) -> str:
    """``Texas, US``; just ``US`` when the city is unknown (never ``, US``)."""
    return ", ".join(p.strip() for p in (offer.geolocation or "").split(",") if p.strip())


class Buyer:
    """Buys instances for the pods of one node; shares searches, claims and the budget."""

    def __init__(
        self,
        *,
        settings: Settings,
        vast: VastClient,
        poller: InstancePoller,
        searches: SharedSearches,
        claims: OfferClaims,
        budget: Budget,
        namespaces: NamespaceHolds,
        objects: ObjectLookup,
        credit: CreditCheck = lambda price: None,
        agent_env: Callable[[Pod], Mapping[str, str] | None] = lambda pod: None,
    ) -> None:
        self._settings = settings
        self._agent_env = agent_env
        """The bootstrap's variables for a pod that runs under the agent, else None."""
        self._credit = credit
        self._vast = vast
        self._poller = poller
        self._searches = searches
        self._claims = claims
        self._budget = budget
        self._namespaces = namespaces
        self._objects = objects
        self._backoff = pod_backoff(settings)
        self._waiting = 0
        """Pods waiting because siblings hold every offer found (``WAITERS_PER_LOOK``)."""

    async def acquire(
        self,
        pod: Pod,
        requirements: Requirements,
        *,
        label: str,
        excluded_machines: set[int],
        progress: Progress,
    ) -> int:
        """Search, pick and buy until an instance exists for ``pod``; return its id."""
        waits = self._backoff.delays()
        # Said once: a retry keeps showing why the last turn failed until it knows better,
        # so a spend-capped pod does not flicker between two reasons every sweep.
        await progress.waiting("SearchingOffers", "searching Vast.ai offers")
        taken = False
        while True:
            outcome = await self._try_buy(pod, requirements, label, excluded_machines, progress)
            if isinstance(outcome, int):
                return outcome
            if outcome is TRIED:  # the pod showed "Buying" meanwhile: say it again
                taken, outcome = False, TAKEN
            if outcome is TAKEN:
                # Not a failure, so no backoff and no Event: the node's other pods hold every
                # offer of the last answer (a thousand pods share one search of 200 offers).
                # Look again soon, at a time of its own so that they do not all wake at once.
                if not taken:  # said once: hundreds of pods may wait like this for a while
                    await progress.waiting("SearchingOffers", TAKEN_MESSAGE)
                    taken = True
                crowd = max(1.0, self._waiting / WAITERS_PER_LOOK)
                self._waiting += 1
                try:
                    await trio.sleep(self._settings.poll_fast * crowd * random.uniform(0.5, 1.5))
                finally:
                    self._waiting -= 1
                continue
            taken = False
            reason, message = outcome
            # Room frees when another pod's instance goes: look again each slow sweep.
            delay = self._settings.poll_slow if reason in RECHECKED_EACH_SWEEP else waits.next()
            await progress.waiting(reason, f"{message}; retrying in {delay:.0f}s")
            await trio.sleep(delay)

    async def _try_buy(
        self,
        pod: Pod,
        requirements: Requirements,
        label: str,
        excluded: set[int],
        progress: Progress,
    ) -> int | Wait:
        """One search and up to ``OFFERS_PER_SEARCH`` buys: an instance id, or why not."""
        query = build_query(requirements)
        try:
            offers, answered_at = await self._searches.search_dated(query)
        except TemporaryError as exc:
            return "SearchingOffers", f"Vast API unavailable: {exc}"
        except PermanentError as exc:
            await progress.event("Warning", "VastAPIError", str(exc))
            return "VastAPIError", str(exc)
        offers = [o for o in offers if o.machine_id not in excluded]
        free = [o for o in offers if self._claims.available(o.id)]
        selection = select(free, requirements)
        if not selection.ranked and len(free) < len(offers):
            self._searches.expire(query, answered_at)  # every offer in it is held or sold
            return TAKEN
        metrics.OFFERS_SEARCHED.inc(len(offers))
        for constraint, count in selection.rejected_by.items():
            metrics.OFFERS_REJECTED.labels(constraint).inc(count)
        if not selection.ranked:
            selection = await self._explain(requirements, selection)
            restrictive = selection.most_restrictive
            reason = "PriceCapExceeded" if restrictive == "price-max" else "NoMatchingOffers"
            message = selection.describe()
            await progress.event("Warning", reason, message, log_as="offers found: 0")
            return reason, message
        return await self._buy_ranked(
            pod, requirements, label, progress, selection, expire=(query, answered_at)
        )

    async def _buy_ranked(
        self,
        pod: Pod,
        requirements: Requirements,
        label: str,
        progress: Progress,
        selection: Selection,
        *,
        expire: tuple[dict[str, Any], float],
    ) -> int | Wait:
        """Try the best ``OFFERS_PER_SEARCH`` offers still free and within the budget, in
        order; ``expire`` is the search to forget when none of them could be had."""
        cheapest = min(offer_price(o, requirements) for o in selection.ranked)
        no_credit = self._credit(cheapest)
        if no_credit is not None:
            await progress.event("Warning", CREDIT_LOW, no_credit)
            return CREDIT_LOW, no_credit
        refusal: Wait | None = None
        tried = 0
        too_dear = math.inf  # the namespace refused this price: dearer ones need no asking
        for offer in selection.ranked:
            if tried == OFFERS_PER_SEARCH:
                break
            price = offer_price(offer, requirements)
            if not self._claims.available(offer.id) or price >= too_dear:
                continue  # bought, gone, or a sibling's now; or over the namespace's room
            outcome = await self._take(
                pod, offer, requirements, price, label, progress, selection, first=tried == 0
            )
            if isinstance(outcome, _Refused):  # a cheaper fallback may still fit
                if outcome.wait[0] not in RECHECKED_EACH_SWEEP:  # e.g. a malformed namespace budget
                    await progress.event("Warning", *outcome.wait)
                    return outcome.wait
                if outcome.wait[0] == NAMESPACE_BUDGET_REACHED:
                    too_dear = price
                refusal = refusal or outcome.wait
                continue
            tried += 1
            if outcome is not None:
                return outcome
        return await self._none_bought(progress, refusal, tried, expire)

    async def _none_bought(
        self,
        progress: Progress,
        refusal: Wait | None,
        tried: int,
        expire: tuple[dict[str, Any], float],
    ) -> Wait:
        """Why a turn that ``tried`` offers bought nothing: a budget's ``refusal`` when no
        offer could be held (a Warning Event says it), else the offers are taken or were
        tried: search again (``expire`` that search)."""
        if refusal is not None and tried == 0:
            await progress.event("Warning", *refusal)
            return refusal
        self._searches.expire(*expire)
        return TAKEN if tried == 0 else TRIED

    async def _take(
        self,
        pod: Pod,
        offer: Offer,
        requirements: Requirements,
        price: float,
        label: str,
        progress: Progress,
        selection: Selection,
        *,
        first: bool,
    ) -> int | Wait | _Refused | None:
        """Claim ``offer``, hold its price in both budgets and buy it: an instance id, why
        the pod must wait, a budget's refusal, or None to try the next offer.

        The claim comes first, with no ``await`` since ``available`` was checked: the
        namespace hold is a round trip to the API server, and sibling pods must not pick
        the same offer meanwhile."""
        with self._claims.claim(offer.id):
            refused = await self._hold(pod, price)
            if refused is not None:
                return _Refused(refused)
            if first:  # said only when this pod gets to buy: siblings may hold all
                logger.bind(pod=pod.key, uid=pod.uid).info(
                    "offers found", detail=selection.describe()
                )
            outcome = await self._try_offer(
                pod, offer, requirements, price, label, progress, found=selection
            )
        if not isinstance(outcome, int):
            await self._release_holds(pod)
        return outcome

    async def _hold(self, pod: Pod, price: float) -> Wait | None:
        """Hold ``price`` in the node's budget, then in the pod's namespace's (on the
        Namespace, shared with every node): None when both are held, else why not."""
        refused = self._budget.hold(pod.uid, price)
        if refused is not None:
            return "SpendCapReached", refused
        waits = await self._namespaces.hold(pod, price)
        if waits is not None:
            self._budget.release(pod.uid)
        return waits

    async def _release_holds(self, pod: Pod) -> None:
        """Nothing was bought: free the pod's room in both budgets (a namespace that cannot
        be written now keeps the hold, which costs room, not money, until the pod's next
        hold or release). A namespace without a cap, where nothing was held, is not asked."""
        self._budget.release(pod.uid)
        if not self._namespaces.holding(pod):
            return
        try:
            await self._namespaces.release(pod)
        except VkError as exc:
            logger.bind(pod=pod.key, uid=pod.uid).warning(
                "namespace hold not released", error=str(exc)
            )

    async def _explain(self, requirements: Requirements, strict: Selection) -> Selection:
        """Why nothing matched: the strict query's server-side filter leaves nothing to count,
        so the pod's GPU models are searched without the other constraints and each offer is
        re-checked, to name the constraint that ruled out the most (e.g. price-max, which
        makes the reason PriceCapExceeded). Only when nothing matches, and shared like any
        search."""
        try:
            broad = await self._searches.search(explain_query(requirements))
        except TemporaryError:
            return strict
        return select(broad, requirements)

    async def _try_offer(
        self,
        pod: Pod,
        offer: Offer,
        requirements: Requirements,
        price: float,
        label: str,
        progress: Progress,
        *,
        found: Selection,
    ) -> int | Wait | None:
        """Buy ``offer``: an instance id, why the pod must wait, or None to try the next.

        One Event says what is about to be bought and among how many offers (``found``): a
        create can wait for the pacer for minutes at Vast's real limits."""
        try:
            request, secrets = await instance_request(
                pod,
                label=label,
                disk_gb=requirements.disk_gb,
                lookup=self._objects,
                bid_price=bid_price(offer, requirements),
                agent_env=self._agent_env(pod),
            )
        except MissingReference as exc:
            return "CreateContainerConfigError", str(exc)
        except SpecError as exc:
            await progress.event("Warning", "InvalidSpec", str(exc))
            return "CreateContainerConfigError", str(exc)
        for secret in secrets:
            redact(secret)
        matched = describe_offer(offer, price)
        await progress.event(
            "Normal",
            "OfferMatched",
            f"{matched}; {len(found.ranked)} of {len(found.ranked) + len(found.rejected)}"
            " offers match",
            log_as="offer match",
        )
        await progress.waiting("Buying", f"buying {matched}")
        try:
            await progress.annotate({BUYING: f"offer {offer.id} at {now_rfc3339()}"})
        except VkError as exc:
            return "KubeAPIError", f"cannot record the buy on the pod before buying: {exc}"
        log = logger.bind(pod=pod.key, uid=pod.uid, offer_id=offer.id)
        log.info("buy_instance", price=price)
        try:
            result = await buy(self._vast, offer, request)
        except OfferGone:
            self._claims.spend(offer.id)
            log.info("offer gone; trying the next one")
            result = None
        except TemporaryError as exc:
            await _clear_intent(progress)
            return "SearchingOffers", f"Vast API unavailable: {exc}"
        except PermanentError as exc:  # e.g. a wrong API key, no credit: one reason for all
            await _clear_intent(progress)
            # No credit is Vast's own verdict, met before the node's credit read saw it.
            credit = isinstance(exc, InsufficientCredit)
            reason = CREDIT_LOW if credit else "VastAPIError"
            detail = f"buying failed: {exc}" + ("; add Vast credit to resume" if credit else "")
            await progress.event("Warning", reason, detail)
            return reason, detail
        if result is None:  # refused, or lost and not found by its label: nothing bills
            await _clear_intent(progress)
            return None
        self._claims.spend(offer.id)
        await self._record_purchase(offer, price, result.instance_id, progress)
        if not result.started:
            log.warning("instance created stopped; replacing it", instance_id=result.instance_id)
            await destroy_all(
                self._vast,
                self._poller,
                pod.uid,
                http_timeout=self._settings.destroy_timeout,
                known=(result.instance_id,),
            )
            return None
        return result.instance_id

    async def _record_purchase(
        self, offer: Offer, price: float, instance_id: int, progress: Progress
    ) -> None:
        await _record(
            progress,
            {
                INSTANCE_ID: str(instance_id),
                OFFER_ID: str(offer.id),
                MACHINE_ID: str(offer.machine_id),
                GPU: f"{offer.num_gpus}x {offer.gpu_name}",
                PRICE: f"{price:.4f}",
                LOCATION: _location(offer),
                BUYING: None,
            },
        )
        await progress.event(
            "Normal",
            "InstanceBought",
            f"bought instance {instance_id}: {describe_offer(offer, price)}",
        )
        self._poller.hurry([instance_id])


async def _clear_intent(progress: Progress) -> None:
    await _record(progress, {BUYING: None})


async def _record(progress: Progress, annotations: dict[str, str | None]) -> None:
    """Best effort: the record helps people and restarts, but the label is the source of
    truth, so a failed write is logged and the buy stands."""
    try:
        await progress.annotate(annotations)
    except VkError as exc:
        logger.bind(pod=progress.pod.key, uid=progress.pod.uid).warning(
            "pod annotation patch failed", error=str(exc)
        )
