"""The life of one pod on the virtual node: one supervised task per pod.

``supervise_pod`` runs inside the dispatcher's pods nursery, inside the pod's own cancel scope
(``PodHandle.run_scope``). The dispatcher cancels that scope when the pod is deleted; then,
and only then, the instance is destroyed (shielded, each attempt with its own deadline, and
verified) and the pod object is removed with grace 0 and a UID precondition.

When the *process* stops instead (SIGTERM, a new leader), the outer cancellation passes
straight through: nothing is destroyed, and the next process adopts each instance by its
label. All state that must survive lives in Vast (the label carries the pod UID) and in
Kubernetes (annotations, ``restartCount``), never only here.

What it owns: the pod's status, Events and annotations, and every instance labelled for the
pod. What it retries: everything transient (Vast 5xx/429/timeouts, no offers yet, a lost
create answer) with backoff, keeping the pod Pending. What escalates: nothing; an unexpected
error is reported on the pod and the lifecycle restarts after a backoff. One pod's failure
never reaches the node.

The lifecycle, one instance per turn of the loop::

    parse annotations ─► adopt an instance labelled for this pod, or search → buy
      ─► wait until running (one poller feeds every pod) ─► Running with address
      ─► watch until it exits / fails / vanishes ─► destroy it
      ─► restartPolicy: buy a new one (restartCount+1, backoff), or end Succeeded/Failed
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

import msgspec
import trio
from loguru import logger

from vk_trio.config import Settings
from vk_trio.errors import PermanentError, TemporaryError, VkError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError
from vk_trio.kube.events import EventRecorder
from vk_trio.kube.models import ConfigMap, Pod, Secret
from vk_trio.kube.pods import delete_pod, get_config_map, get_secret
from vk_trio.logs import redact
from vk_trio.offers import (
    AnnotationError,
    Requirements,
    Selection,
    bid_price,
    build_query,
    explain_query,
    offer_price,
    parse_requirements,
    select,
)
from vk_trio.pods.budget import Budget
from vk_trio.pods.instances import LOOKUP_ATTEMPTS, LOOKUP_INTERVAL, buy, destroy_all
from vk_trio.pods.market import OfferClaims, SharedSearches
from vk_trio.pods.poller import BOOTING, InstancePoller, instance_label
from vk_trio.pods.reporter import PodReporter
from vk_trio.pods.spec import (
    MissingReference,
    SpecError,
    chosen_container,
    instance_request,
    skipped_containers,
)
from vk_trio.pods.status import Phase, PodView, Running, Terminated, Waiting, now_rfc3339
from vk_trio.vast import Instance, Offer, OfferGone, VastClient

# Pod annotations vk-trio writes: the record of what was bought, readable with kubectl.
INSTANCE_ID = "vast.ai/instance-id"
OFFER_ID = "vast.ai/offer-id"
MACHINE_ID = "vast.ai/machine-id"
GPU = "vast.ai/gpu"
PRICE = "vast.ai/price-per-hour"
LOCATION = "vast.ai/location"
ENDPOINTS = "vast.ai/endpoints"
BUYING = "vast.ai/buying"
"""Set before a create request is sent, cleared once its outcome is known: a process that
finds it on restart knows a buy may have happened that the list does not show yet."""

MIRROR = "kubernetes.io/config.mirror"
"""Marks a static pod's mirror: the pod really runs on some kubelet's disk, never here."""

OFFERS_PER_SEARCH = 5
"""Offers tried, best first, before searching again (each taken offer costs a create call)."""
VISIBILITY_GRACE = 90.0
"""Seconds a just-bought instance may be missing from the list before it counts as lost."""
MACHINE_FAILURES = 3
"""Boots that may fail in a row (each on another machine) before the container is blamed;
a bad image fails on every host, and each try rents a GPU."""
OFFLINE_GRACE = 600.0
"""Seconds an instance may stay offline/unknown before it is replaced (Vast hosts blip)."""
BACKOFF_RESET = 600.0
"""An instance that ran this long resets the crash backoff (the kubelet's 10 minutes)."""
RECHECK = 30.0
"""Seconds between re-checks of deadlines while no instance change arrives."""


@dataclass
class NodeServices:
    """What every pod task of one node shares."""

    settings: Settings
    vast: VastClient
    kube: KubeClient
    poller: InstancePoller
    events: EventRecorder
    searches: SharedSearches
    budget: Budget
    offers: OfferClaims = field(default_factory=OfferClaims)


class PodHandle:
    """The dispatcher's grip on one pod's task: the newest pod object and the cancel scope."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.uid = pod.uid
        self.run_scope = trio.CancelScope()
        self.gone = False
        """The pod object no longer exists in the API (DELETED), so nothing to delete."""
        self.version = 0
        """Bumped by every ``update``, so a waiter cannot miss one that came meanwhile."""
        self._updated = trio.Event()

    def update(self, pod: Pod) -> None:
        """Hand the task a newer copy of the pod; deletion cancels the task's run scope."""
        self.pod = pod
        self.version += 1
        updated, self._updated = self._updated, trio.Event()
        updated.set()
        if pod.is_deleting:
            self.stop()

    def stop(self, *, gone: bool = False) -> None:
        """The pod is being deleted (idempotent): end the lifecycle, then tear down."""
        self.gone = self.gone or gone
        self.run_scope.cancel()

    async def wait_updated(self, since: int) -> Pod:
        """The pod, once it is newer than ``version`` was at ``since``."""
        while self.version == since:
            await self._updated.wait()
        return self.pod


class Backoff:
    """Exponential backoff: ``first``, doubled each time, never above ``cap`` seconds."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


class KubeObjects:
    """Secrets and ConfigMaps read on demand (no cluster-wide informer; RBAC: get only)."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def secret(self, namespace: str, name: str) -> Secret | None:
        return await get_secret(self._kube, namespace, name)

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        return await get_config_map(self._kube, namespace, name)


@dataclass(frozen=True)
class _MachineFailed:
    """The instance never ran (boot timeout, runtime error, price above the cap): the host's
    fault, not the container's, so another machine is tried without a restart."""

    reason: str
    message: str


_EXIT_CODE = re.compile(r"exit(?:ed)?(?: with)?(?: code| status)?[ :=]*(-?\d+)", re.IGNORECASE)


async def supervise_pod(services: NodeServices, handle: PodHandle) -> None:
    """Run one pod's lifecycle until the pod is deleted, then destroy what it rented."""
    log = logger.bind(pod=handle.pod.key, uid=handle.uid)
    restarts = _backoff(services)
    with handle.run_scope:
        while True:
            try:
                await _PodLifecycle(services, handle).run()
                await trio.sleep_forever()  # terminal: nothing to do until the pod is deleted
            except Exception as exc:  # one pod's bug must never take the node down
                delay = restarts.next()
                log.exception("pod supervisor failed; restarting", retry_in=delay)
                await services.events.emit(
                    handle.pod,
                    type="Warning",
                    reason="SupervisorError",
                    # no delay in the text: identical messages aggregate into one Event
                    message=f"internal error, retrying: {type(exc).__name__}: {exc}",
                )
                await trio.sleep(delay)
    await _teardown(services, handle)


async def _teardown(services: NodeServices, handle: PodHandle) -> None:
    """Destroy every instance of the deleted pod (verified), then remove the pod object.

    Each destroy attempt is shielded with its own deadline; the waits between attempts are
    not, so a stopping process leaves the pod Terminating for the next one to finish.
    """
    pod = handle.pod
    log = logger.bind(pod=pod.key, uid=pod.uid)
    retry = _backoff(services)
    while True:
        try:
            destroyed = await destroy_all(
                services.vast,
                services.poller,
                pod.uid,
                set(),
                deadline=services.settings.destroy_timeout,
            )
            break
        except (VkError, trio.TooSlowError) as exc:
            delay = retry.next()
            await services.events.emit(
                pod,
                type="Warning",
                reason="DestroyFailed",
                message=f"could not destroy the instance yet, retrying: {exc}",
            )
            log.warning("destroy failed; retrying", error=str(exc), retry_in=delay)
            await trio.sleep(delay)
    services.budget.release(pod.uid)
    if destroyed:
        await services.events.emit(
            pod, type="Normal", reason="InstanceDestroyed", message="instance destroyed"
        )
    services.poller.hurry()
    if handle.gone:
        log.info("pod gone; instances destroyed", destroyed=destroyed)
        return
    # Not shielded: the instance is gone, so a stopping process may leave the pod
    # Terminating; the next one sees the deletionTimestamp and finishes the delete.
    while True:
        try:
            await delete_pod(services.kube, pod)
            break
        except KubeError as exc:
            log.warning("pod delete failed; retrying", error=str(exc))
            await trio.sleep(2.0)
    log.info("pod deleted", destroyed=destroyed)


def _backoff(services: NodeServices) -> Backoff:
    return Backoff(services.settings.backoff_first, services.settings.backoff_cap)


def _label(services: NodeServices, pod: Pod) -> str:
    meta = pod.metadata
    return instance_label(services.settings.node_name, meta.namespace, meta.name, meta.uid)


def _unsupported(pod: Pod) -> str | None:
    """Why this pod must not get a GPU, or None.

    Node agents with blanket tolerations (CNI, kube-proxy, log shippers) are DaemonSet pods
    that land on every node, this one included; a mirror pod is a static pod that runs from
    some kubelet's disk. Renting a GPU for either would bill for nothing anyone asked for.
    """
    if any(owner.kind == "DaemonSet" for owner in pod.metadata.owner_references):
        return (
            "DaemonSet pods do not run on the Vast.ai virtual node: give the DaemonSet a "
            "nodeAffinity that excludes type=virtual-kubelet (see the README)"
        )
    if MIRROR in pod.metadata.annotations:
        return "static (mirror) pods run on their own kubelet, never on the Vast.ai virtual node"
    return None


def _describe(offer: Offer, price: float) -> str:
    where = (offer.geolocation or "").strip(" ,") or "unknown location"
    return (
        f"{offer.num_gpus}x {offer.gpu_name} at ${price:.3f}/h in {where} "
        f"(offer {offer.id}, machine {offer.machine_id})"
    )


class _PodLifecycle:
    """One attempt at running a pod; ``supervise_pod`` restarts it if it crashes."""

    def __init__(self, services: NodeServices, handle: PodHandle) -> None:
        self.s = services
        self.handle = handle
        pod = handle.pod
        self.uid = pod.uid
        self.label = _label(services, pod)
        first = pod.spec.containers[0].name if pod.spec.containers else ""
        self.report = PodReporter(services.kube, services.events, pod, chosen=first)
        self.log = self.report.log
        self.excluded_machines: set[int] = set()
        self.requirements = Requirements()
        """The pod's parsed annotations, once ``run`` has them."""

    @property
    def view(self) -> PodView:
        return self.report.view

    async def show(self, view: PodView) -> None:
        self.report.rebind(self.handle.pod)
        await self.report.show(view)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        if self.handle.pod.is_terminal:  # finished earlier: only make sure nothing still bills
            await self._destroy(set())
            return
        unsupported = _unsupported(self.handle.pod)
        if unsupported is not None:
            await self._refuse(unsupported)
            return
        requirements = self.requirements = await self._requirements()
        pod = self.handle.pod
        previous = next(
            (c for c in pod.status.container_statuses if c.name == self.report.chosen), None
        )
        # What an earlier run (maybe another process) showed is the starting point: a pod
        # whose container was running keeps its state and address while its instance is
        # re-observed, instead of falling back to "searching" with no IP.
        was_running = previous.state.running if previous else None
        view = replace(
            self.view,
            phase="Running" if pod.status.phase == "Running" else "Pending",
            state=Running(was_running.started_at or now_rfc3339())
            if was_running
            else self.view.state,
            address=pod.status.pod_ip if was_running else None,
            restart_count=previous.restart_count if previous else 0,
            skipped={
                name: f'the instance runs "{self.report.chosen}": one Vast instance, one image'
                for name in skipped_containers(pod)
            },
        )
        self.report.view = view
        crash = _backoff(self.s)
        outcome: Terminated | _MachineFailed | None = None
        machine_failures = 0
        instance_id = await self._adopt()
        if instance_id is None and pod.metadata.annotations.get(INSTANCE_ID):
            outcome = Terminated(
                137, "InstanceLost", "the instance vanished while vk-trio was away"
            )
        while True:
            if outcome is None:
                if instance_id is None:
                    instance_id = await self._buy(requirements)
                followed_from = trio.current_time()
                outcome = await self._follow(instance_id)
                await self._destroy({instance_id})
                self.s.budget.release(self.uid)
                instance_id = None
                if trio.current_time() - followed_from > BACKOFF_RESET:
                    crash.reset()  # a long healthy run: the next exit is not a crash loop
            if isinstance(outcome, _MachineFailed):
                machine_failures += 1
                if machine_failures < MACHINE_FAILURES:
                    outcome = None
                    continue
                outcome = Terminated(
                    128,
                    "StartError",
                    f"{outcome.message} (the instance failed on {machine_failures} machines)",
                )
            machine_failures = 0
            if not self._restarts(outcome):
                phase: Phase = "Succeeded" if outcome.exit_code == 0 else "Failed"
                await self.show(
                    replace(
                        self.view,
                        phase=phase,
                        state=outcome,
                        ready=False,
                        reason=None if phase == "Succeeded" else outcome.reason,
                        message=outcome.message or None,
                    )
                )
                await self.report.annotate({ENDPOINTS: None})
                return
            delay = crash.next()
            await self.report.event(
                "Warning",
                "BackOff",
                f"container {outcome.reason.lower()} (exit {outcome.exit_code}); "
                f"buying a new instance in {delay:.0f}s",
            )
            await self.show(
                replace(
                    self.view,
                    state=Waiting("CrashLoopBackOff", f"back-off {delay:.0f}s restarting"),
                    ready=False,
                    restart_count=self.view.restart_count + 1,
                    last_state=outcome,
                    address=None,
                )
            )
            await self.report.annotate({ENDPOINTS: None})
            outcome = None
            await trio.sleep(delay)

    async def _refuse(self, message: str) -> None:
        """The pod stays Pending (a failed one would be re-created at once) and says why."""
        await self.report.event("Warning", "NotSupportedOnVirtualNode", message)
        await self.show(self.view.waiting("NotSupportedOnVirtualNode", message))

    def _restarts(self, outcome: Terminated) -> bool:
        policy = self.handle.pod.spec.restart_policy
        if policy == "Never":
            return False
        if policy == "OnFailure":
            return outcome.exit_code != 0
        return True

    # -- requirements --------------------------------------------------------------------

    async def _requirements(self) -> Requirements:
        """Parse annotations and pick the container; wait for a fix while they are wrong."""
        while True:
            pod, seen = self.handle.pod, self.handle.version
            try:
                chosen = chosen_container(pod)
                self.report.chosen = chosen.name
                return parse_requirements(
                    pod.metadata.annotations,
                    gpu_limit=chosen.resources.limits.get("nvidia.com/gpu"),
                )
            except (AnnotationError, SpecError) as exc:
                await self.report.event("Warning", "InvalidAnnotation", str(exc))
                await self.show(self.view.waiting("InvalidAnnotation", str(exc)))
            await self.handle.wait_updated(seen)

    # -- instances -----------------------------------------------------------------------

    async def _adopt(self) -> int | None:
        """An instance an earlier run (or process) bought for this pod, if any.

        Waits for a sweep that started after this call, so an instance bought moments ago
        by a previous process is seen before anything new is bought; if that process died
        with a create in flight (``vast.ai/buying`` is still set), a few more sweeps are
        awaited, since a new instance can take a moment to be listed. While Vast cannot be
        listed it retries, with an Event each time; a pod that was Running before a restart
        during a Vast outage stays Running, any other shows waiting ``VastAPIError``.
        """
        await self._fresh_sweep()
        instances = self.s.poller.instances(self.uid)
        if not instances and BUYING in self.handle.pod.metadata.annotations:
            self.log.warning("a buy was in flight when vk-trio stopped; looking for it")
            for _ in range(LOOKUP_ATTEMPTS):
                await trio.sleep(LOOKUP_INTERVAL)
                await self._fresh_sweep()
                instances = self.s.poller.instances(self.uid)
                if instances:
                    break
            await self.report.annotate({BUYING: None})
        if not instances:
            return None
        keep = max(instances, key=lambda i: (i.actual_status == "running", i.id))
        extras = {i.id for i in instances if i.id != keep.id}
        if extras:
            self.log.warning("several instances for one pod; keeping one", keep=keep.id)
            for instance_id in sorted(extras):
                with trio.CancelScope(shield=True):
                    await self.s.vast.destroy_instance(instance_id)
        self.log.info("adopted instance", instance_id=keep.id, status=keep.actual_status)
        return keep.id

    async def _fresh_sweep(self) -> None:
        """Wait for a successful sweep that started now, reporting while Vast cannot list."""
        retry = _backoff(self.s)
        while True:
            try:
                await self.s.poller.fresh()
                return
            except TemporaryError as exc:  # e.g. a revoked API key: the list is refused
                delay = retry.next()
                await self.report.event("Warning", "VastAPIError", str(exc))
                if self.handle.pod.status.phase != "Running":
                    message = f"{exc}; retrying in {delay:.0f}s"
                    await self.show(self.view.waiting("VastAPIError", message))
                await trio.sleep(delay)

    async def _buy(self, requirements: Requirements) -> int:
        """Search, pick and buy, until an instance exists; the pod stays Pending meanwhile."""
        waits = _backoff(self.s)
        while True:
            outcome = await self._try_buy(requirements)
            if isinstance(outcome, int):
                return outcome
            reason, message = outcome
            # Room frees when another pod's instance goes: look again each slow sweep.
            delay = self.s.settings.poll_slow if reason == "SpendCapReached" else waits.next()
            await self.show(self.view.waiting(reason, f"{message}; retrying in {delay:.0f}s"))
            await trio.sleep(delay)

    async def _try_buy(self, requirements: Requirements) -> int | tuple[str, str]:
        """One search and up to ``OFFERS_PER_SEARCH`` buys: an instance id, or why not."""
        await self.show(self.view.waiting("SearchingOffers", "searching Vast.ai offers"))
        try:
            offers = await self.s.searches.search(build_query(requirements))
        except TemporaryError as exc:
            return "SearchingOffers", f"Vast API unavailable: {exc}"
        except PermanentError as exc:
            await self.report.event("Warning", "VastAPIError", str(exc))
            return "VastAPIError", str(exc)
        offers = [o for o in offers if o.machine_id not in self.excluded_machines]
        selection = select(offers, requirements)
        if not selection.ranked:
            selection = await self._explain(requirements, selection)
            restrictive = selection.most_restrictive
            reason = "PriceCapExceeded" if restrictive == "price-max" else "NoMatchingOffers"
            message = selection.describe()
            await self.report.event("Warning", reason, message, log_as="offers found: 0")
            return reason, message
        await self.report.event(
            "Normal", "OffersFound", selection.describe(), log_as="offers found"
        )
        claims = self.s.offers
        candidates = [o for o in selection.ranked if claims.available(o.id)]
        refusal = None
        tried = 0
        for offer in candidates:
            if tried == OFFERS_PER_SEARCH:
                break
            if not claims.available(offer.id):  # claimed while we tried another
                continue
            price = offer_price(offer, requirements)
            refused = self.s.budget.hold(self.uid, price)
            if refused is not None:  # a cheaper fallback may still fit
                refusal = refusal or refused
                continue
            tried += 1
            with claims.claim(offer.id):
                outcome = await self._try_offer(offer, requirements, price)
            if isinstance(outcome, int):
                return outcome
            self.s.budget.release(self.uid)
            if outcome is not None:
                return outcome
        if refusal is not None and tried == 0:
            await self.report.event("Warning", "SpendCapReached", refusal)
            return "SpendCapReached", refusal
        return "SearchingOffers", "every matching offer was taken before it could be bought"

    async def _explain(self, requirements: Requirements, strict: Selection) -> Selection:
        """Why nothing matched: the strict query's server-side filter leaves nothing to count,
        so the pod's GPU models are searched without the other constraints and each offer is
        re-checked, to name the constraint that ruled out the most (e.g. price-max, which
        makes the reason PriceCapExceeded). Only when nothing matches, and shared like any
        search."""
        try:
            broad = await self.s.searches.search(explain_query(requirements))
        except TemporaryError:
            return strict
        return select(broad, requirements)

    async def _try_offer(
        self, offer: Offer, requirements: Requirements, price: float
    ) -> int | tuple[str, str] | None:
        """Buy ``offer``: an instance id, why the pod must wait, or None to try the next."""
        bid = bid_price(offer, requirements)
        try:
            request, secrets = await instance_request(
                self.handle.pod,
                label=self.label,
                disk_gb=requirements.disk_gb,
                lookup=KubeObjects(self.s.kube),
                bid_price=bid,
            )
        except MissingReference as exc:
            return "CreateContainerConfigError", str(exc)
        except SpecError as exc:
            await self.report.event("Warning", "InvalidSpec", str(exc))
            return "CreateContainerConfigError", str(exc)
        for secret in secrets:
            redact(secret)
        await self.report.event(
            "Normal", "OfferMatched", _describe(offer, price), log_as="offer match"
        )
        # The intent is on record before the request leaves: a process killed from here on
        # makes the next one look harder for an instance before buying again.
        await self.report.annotate({BUYING: f"offer {offer.id} at {now_rfc3339()}"})
        self.log.info("buy_instance", offer_id=offer.id, price=price)
        try:
            result = await buy(self.s.vast, offer, request)
        except OfferGone:
            self.s.offers.spend(offer.id)
            self.log.info("offer gone; trying the next one", offer_id=offer.id)
            result = None
        except TemporaryError as exc:
            await self.report.annotate({BUYING: None})
            return "SearchingOffers", f"Vast API unavailable: {exc}"
        except PermanentError as exc:  # e.g. a wrong API key, no credit: one reason for all
            await self.report.annotate({BUYING: None})
            await self.report.event("Warning", "VastAPIError", f"buying failed: {exc}")
            return "VastAPIError", f"buying failed: {exc}"
        if result is None:  # refused, or lost and not found by its label: nothing bills
            await self.report.annotate({BUYING: None})
            return None
        self.s.offers.spend(offer.id)
        await self._record_purchase(offer, price, result.instance_id)
        if not result.started:
            self.log.warning("instance created stopped; replacing it", id=result.instance_id)
            self.excluded_machines.add(offer.machine_id)
            await self._destroy({result.instance_id})
            return None
        return result.instance_id

    async def _record_purchase(self, offer: Offer, price: float, instance_id: int) -> None:
        await self.report.annotate(
            {
                INSTANCE_ID: str(instance_id),
                OFFER_ID: str(offer.id),
                MACHINE_ID: str(offer.machine_id),
                GPU: f"{offer.num_gpus}x {offer.gpu_name}",
                PRICE: f"{price:.4f}",
                LOCATION: offer.geolocation or "",
                BUYING: None,
            }
        )
        await self.report.event(
            "Normal", "InstanceBought", f"bought instance {instance_id}: {_describe(offer, price)}"
        )
        self.s.poller.hurry(60.0)

    async def _destroy(self, known: set[int], *, keep: int | None = None) -> None:
        """Destroy this pod's instances but ``keep`` while the pod lives on (a restart, a
        terminal phase, a second instance)."""
        retry = _backoff(self.s)
        while True:
            try:
                await destroy_all(
                    self.s.vast,
                    self.s.poller,
                    self.uid,
                    known,
                    deadline=self.s.settings.destroy_timeout,
                    keep=keep,
                )
                return
            except (VkError, trio.TooSlowError) as exc:
                delay = retry.next()
                await self.report.event(
                    "Warning",
                    "DestroyFailed",
                    f"could not destroy the instance yet, retrying: {exc}",
                )
                await trio.sleep(delay)

    # -- following one instance ----------------------------------------------------------

    async def _follow(self, instance_id: int) -> Terminated | _MachineFailed:
        """Report the instance's progress until it ends; return how it ended.

        Any *other* instance labelled for this pod (a create whose answer was lost and that
        was listed only after a second buy) is destroyed on sight: a pod never keeps two.
        """
        poller = self.s.poller
        bought_at = trio.current_time()
        startup = self.requirements.startup_timeout or self.s.settings.startup_timeout
        seen = False
        offline_since: float | None = None
        while True:
            version = poller.version(self.uid)
            listed = poller.instances(self.uid)
            instance = next((i for i in listed if i.id == instance_id), None)
            extras = {i.id for i in listed if i.id != instance_id}
            if extras:
                self.log.warning("a second instance for one pod; destroying it", ids=extras)
                await self._destroy(extras, keep=instance_id)
            now = trio.current_time()
            if instance is None:
                if seen or now - bought_at > VISIBILITY_GRACE:
                    return Terminated(137, "InstanceLost", f"instance {instance_id} disappeared")
            else:
                if not seen:  # adopted after a restart: its startup began when it was created
                    bought_at = min(bought_at, now - _age(instance))
                seen = True
                ended = await self._observe(instance, now - bought_at > startup, offline_since)
                if ended is not None:
                    if isinstance(ended, _MachineFailed):
                        self.excluded_machines.add(instance.machine_id)
                        await self.report.event("Warning", ended.reason, ended.message)
                    return ended
                bad = instance.actual_status not in ("running", *BOOTING)
                offline_since = (offline_since or now) if bad else None
            # Wake at the startup deadline too: a stuck boot changes nothing to wake us.
            until_late = bought_at + startup - trio.current_time()
            with trio.move_on_after(RECHECK if until_late <= 0 else min(RECHECK, until_late)):
                await poller.wait_changed(self.uid, version)

    async def _observe(
        self, instance: Instance, late: bool, offline_since: float | None
    ) -> Terminated | _MachineFailed | None:
        """Show what ``instance`` is doing; how it ended, if it did. ``late``: past startup."""
        status = instance.actual_status
        message = (instance.status_msg or "").strip()
        cap = self.requirements.price_max
        if cap is not None and instance.dph_total > cap + 1e-6:
            return _MachineFailed(
                "PriceCapExceeded",
                f"instance {instance.id} bills ${instance.dph_total:.4f}/h, above "
                f"vast.ai/price-max ${cap:.4f}/h; destroying it and trying another machine",
            )
        if status == "running":
            if not isinstance(self.view.state, Running) or not self.view.ready:
                await self._running(instance)
            return None
        if "OCI runtime create failed" in message or (status == "created" and "rror" in message):
            return _MachineFailed(
                "StartFailed",
                f"instance {instance.id} failed to start: {message[:300]}; trying another machine",
            )
        if status == "exited":
            code = _exit_code(message)
            return Terminated(code, "Completed" if code == 0 else "Error", message[:500])
        if status in BOOTING:
            if isinstance(self.view.state, Running):
                await self.show(replace(self.view, ready=False, message=f"instance {status}"))
            elif late:
                return _MachineFailed(
                    "BootTimeout",
                    f"instance {instance.id} not running within its startup timeout; "
                    "trying another machine",
                )
            else:
                phase = status or "scheduling"
                detail = f": {message[:200]}" if message else ""
                await self.show(
                    self.view.waiting("Provisioning", f"instance {instance.id} {phase}{detail}")
                )
            return None
        # stopped, frozen, offline, unknown: not serving; replaced if it lasts
        if offline_since is not None and trio.current_time() - offline_since > OFFLINE_GRACE:
            return Terminated(137, "HostOffline", f"instance {instance.id} {status} too long")
        note = f"instance {instance.id} {status}"
        if isinstance(self.view.state, Running):
            await self.show(replace(self.view, ready=False, message=note))
        elif late:  # it never ran, and its startup time is up whatever the reason
            return _MachineFailed(
                "BootTimeout", f"{note}, never running within its startup timeout; trying another"
            )
        else:  # never ran yet (e.g. adopted mid-boot after a restart): still provisioning
            await self.show(self.view.waiting("Provisioning", f"{note}; waiting for its host"))
        return None

    async def _running(self, instance: Instance) -> None:
        address = instance.address
        endpoints = instance.endpoints()
        started = (
            self.view.state.started_at if isinstance(self.view.state, Running) else now_rfc3339()
        )
        await self.report.annotate(
            {ENDPOINTS: msgspec.json.encode(endpoints).decode(), INSTANCE_ID: str(instance.id)}
        )
        await self.show(
            replace(
                self.view,
                phase="Running",
                state=Running(started),
                ready=True,
                address=address,
                message=None,
                reason=None,
            )
        )
        where = ", ".join(f"{port} → {addr}" for port, addr in endpoints.items()) or address
        await self.report.event(
            "Normal",
            "InstanceReady",
            f"instance {instance.id} running at {address}: {where}",
            log_as="Instance ready",
        )


def _age(instance: Instance) -> float:
    """Seconds since Vast created ``instance`` (0 when it does not say, or the clocks differ)."""
    if not instance.start_date:
        return 0.0
    return max(0.0, time.time() - instance.start_date)


def _exit_code(message: str) -> int:
    """The exit code Vast mentions in ``status_msg``; 0 when it names none."""
    match = _EXIT_CODE.search(message)
    return int(match.group(1)) if match else 0
