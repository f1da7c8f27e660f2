"""The Vast provider, built and run: everything ``vk-trio run`` needs of Vast, in one place.

``open_vast_backend`` opens the one Vast client (paced per API key, fenced by the leader
election) and returns a ``VastBackend``. The app starts its two tasks in the root nursery:

- ``run``: the one instance poller that feeds every pod (a rejected API key stops the node
  at start, as it can never work), then hands back the ``VastProvider`` the node drives, and
  keeps the Node's ``vast.ai/spend-per-hour`` annotation at what its instances bill;
- ``reap``: the orphan reaper, and the tidying of this node's stale namespace budget holds
  (``namespace_budget.run_tidy``), once the node's pods are dispatched (both must know them).

Beside the poller, ``run`` keeps the account's money in view each slow sweep
(``account``): the credit (buying stops before it runs dry) and each pod's cost record.

The backend also says how Vast is doing, for ``/readyz`` (``last_success``, ``problem``) and
``/metrics`` (``metrics_state``), so the app itself holds no Vast policy.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio
from loguru import logger

from vk_trio import metrics
from vk_trio.annotations import NODE_SPEND
from vk_trio.config import Settings
from vk_trio.errors import PermanentError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.kube.node import NodeStatusReporter
from vk_trio.kube.pods import KubeObjects, get_pod
from vk_trio.logs import redact
from vk_trio.node.dispatch import Dispatcher
from vk_trio.provider.account import CostRecorder, CreditWatch
from vk_trio.provider.agent_source import find_agent
from vk_trio.provider.budget import Budget
from vk_trio.provider.namespace_budget import NamespaceBudget, run_tidy
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.reaper import run_reaper
from vk_trio.provider.runtime import ImageConfigs
from vk_trio.provider.vast_provider import VastProvider
from vk_trio.registry import RegistryClient
from vk_trio.retry import vast_policy
from vk_trio.vast import VastAuthError, VastClient
from vk_trio.vast.pacer import Pacer, shared_pacer

__all__ = ["DEGRADED_AFTER", "VastBackend", "open_vast_backend"]

DEGRADED_AFTER = 3
"""Failed sweeps in a row before readiness reports Vast as failing (one is a blip)."""


@asynccontextmanager
async def open_vast_backend(
    settings: Settings, *, fence: Callable[[str], None] | None = None
) -> AsyncIterator[VastBackend]:
    """The Vast client for ``settings`` (key redacted from every log line), and the backend
    over it; the client closes when the block ends."""
    if settings.vast_api_key:
        redact(settings.vast_api_key)
    pacer = shared_pacer(settings.vast_api_key, settings.pacing)  # Vast limits per key
    async with VastClient(
        api_key=settings.vast_api_key,
        base_url=settings.vast_api_url,
        pacer=pacer,
        retry=vast_policy(settings),
        fence=fence,
    ) as vast:
        yield VastBackend(settings, vast, pacer)


class VastBackend:
    """The Vast side of one node: its poller, its provider, and what they need running."""

    def __init__(self, settings: Settings, vast: VastClient, pacer: Pacer) -> None:
        self._settings = settings
        self._vast = vast
        self._pacer = pacer
        self.poller = InstancePoller(
            vast, node=settings.node_name, fast=settings.poll_fast, slow=settings.poll_slow
        )
        self._namespaces: NamespaceBudget | None = None
        """This node's side of the namespace budgets (``namespace_budget``), made with the
        kube client by whichever of ``run`` and ``reap`` needs it first."""
        self.stale = max(5 * settings.poll_slow, 120.0)
        """Seconds without a successful sweep after which readiness says Vast is silent."""
        self.credit: CreditWatch | None = None
        """The account's credit, once ``run`` started watching it."""
        self.costs: CostRecorder | None = None
        self.images: ImageConfigs | None = None
        """Where the agent's pods' image configs come from; None: their registries
        (``RegistryClient``). Set before ``run`` by a caller with images no registry it can
        reach serves (the demo: the Vast simulator's stand-in images)."""

    @asynccontextmanager
    async def _image_configs(self) -> AsyncIterator[ImageConfigs]:
        if self.images is not None:
            yield self.images
            return
        async with RegistryClient() as registry:
            yield registry

    async def run(
        self,
        kube: KubeClient,
        reporter: NodeStatusReporter,
        *,
        task_status: trio.TaskStatus[VastProvider] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Poll Vast and report the provider once the first sweep is in; then keep the
        Node's spend annotation current until cancelled."""
        settings = self._settings
        agent = await find_agent(settings, kube)
        async with self._image_configs() as images, trio.open_nursery() as nursery:
            await nursery.start(self.poller.run)
            if isinstance(self.poller.last_failure, VastAuthError):
                # Fail fast: nothing can work, and a crash-looping pod says so louder than
                # a Running one that is never ready. A key revoked later only degrades.
                raise self.poller.last_failure
            budget = Budget(
                self.poller,
                max_hourly=settings.max_hourly_spend,
                max_instances=settings.max_instances,
            )
            credit, costs = self._watch_money(kube, reporter)
            await credit.check()  # known before the first pod may buy
            nursery.start_soon(credit.run)
            nursery.start_soon(costs.run)
            task_status.started(
                VastProvider(
                    settings=settings,
                    vast=self._vast,
                    poller=self.poller,
                    objects=KubeObjects(kube),
                    budget=budget,
                    namespaces=self._namespace_budget(kube),
                    credit=credit.refusal,
                    costs=costs,
                    agent=agent.delivery,
                    agent_missing=agent.missing,
                    images=images,
                )
            )
            await self._show_spend(reporter)

    def _watch_money(
        self, kube: KubeClient, reporter: NodeStatusReporter
    ) -> tuple[CreditWatch, CostRecorder]:
        """The credit watch (telling the Node by Events) and the pods' cost recorder."""
        settings = self._settings
        events = EventRecorder(kube, host=settings.node_name)

        async def node_event(kind: str, reason: str, message: str) -> None:
            about = Involved.node(settings.node_name, reporter.uid)
            level: Literal["Normal", "Warning"] = "Warning" if kind == "Warning" else "Normal"
            await events.emit_for(about, type=level, reason=reason, message=message)

        self.credit = CreditWatch(
            self._vast,
            self.poller,
            stop_hours=settings.credit_stop_hours,
            warn_hours=settings.credit_warn_hours,
            interval=settings.poll_slow,
            node_event=node_event,
        )
        self.costs = CostRecorder(self.poller.costs, kube, self._vast, interval=settings.poll_slow)
        return self.credit, self.costs

    async def reap(
        self,
        kube: KubeClient,
        dispatcher: Dispatcher,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Destroy instances labelled for this node whose pod is gone (``reaper``), and
        remove this node's namespace budget holds whose pod is gone (``run_tidy``)."""

        def live_uids() -> set[str]:
            return set(dispatcher.handles)

        def synced() -> bool:
            return dispatcher.synced

        pod_exists = functools.partial(_pod_exists, kube)
        interval = self._settings.reap_interval
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    run_tidy,
                    self._namespace_budget(kube),
                    self.poller,
                    live_uids=live_uids,
                    synced=synced,
                    pod_exists=pod_exists,
                    interval=interval,
                )
            )
            await nursery.start(
                functools.partial(
                    run_reaper,
                    self._vast,
                    self.poller,
                    live_uids=live_uids,
                    synced=synced,
                    pod_exists=pod_exists,
                    interval=interval,
                    destroy_timeout=self._settings.destroy_timeout,
                )
            )
            task_status.started()

    def _namespace_budget(self, kube: KubeClient) -> NamespaceBudget:
        if self._namespaces is None:
            self._namespaces = NamespaceBudget(kube, node=self._settings.node_name)
        return self._namespaces

    # -- what the node's probes, /debug/vars and /metrics read ----------------------------

    def last_success(self) -> float | None:
        return self.poller.last_success

    def problem(self) -> str | None:
        """Why readiness should fail because of Vast, or None."""
        failure = self.poller.last_failure
        if isinstance(failure, PermanentError):
            return f"Vast API refuses our calls: {failure}"
        if failure is not None and self.poller.failures_in_a_row >= DEGRADED_AFTER:
            return f"Vast API failing ({self.poller.failures_in_a_row} sweeps in a row): {failure}"
        return self.credit.problem() if self.credit is not None else None

    def debug_vars(self) -> dict[str, Any]:
        found = {"pacer": self._pacer.stats(), "poller": self.poller.stats()}
        if self.costs is not None:
            found["charges_reconciled"] = self.costs.stats()
        return found

    def metrics_state(
        self, pods: Callable[[], Mapping[tuple[str, str], int]]
    ) -> metrics.StateSource:
        """What /metrics reads at each scrape: ``pods`` (the node's), and what Vast bills."""
        return metrics.StateSource(
            pods=pods,
            instances=lambda: Counter(
                i.actual_status or "scheduling" for i in self.poller.all_instances()
            ),
            spend_per_hour=self.poller.spend_per_hour,
            spent=self.poller.spent,
            credit=self._credit_now,
            costs=lambda: self.poller.costs.by_pod(trio.current_time()),
        )

    def _credit_now(self) -> tuple[float, float] | None:
        """(USD left, hours left at the current spend) as last read, for ``/metrics``."""
        if self.credit is None or self.credit.credit is None:
            return None
        return self.credit.credit, self.credit.hours_left()

    async def _show_spend(self, reporter: NodeStatusReporter) -> None:
        """Keep the Node's ``vast.ai/spend-per-hour`` annotation at what its instances bill."""
        shown: str | None = None
        while True:
            await trio.sleep(self._settings.poll_slow)
            current = f"{self.poller.spend_per_hour():.4f}"
            if current != shown:
                try:
                    await reporter.annotate({NODE_SPEND: current})
                except KubeError as exc:
                    logger.warning("node spend annotation failed", error=str(exc))
                    continue
                shown = current


async def _pod_exists(kube: KubeClient, namespace: str, name: str, uid: str) -> bool:
    pod = await get_pod(kube, namespace, name)
    return pod is not None and pod.uid == uid
