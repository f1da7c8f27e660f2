"""``vk-trio run``: the virtual node, one process, one root nursery.

The root nursery owns, in start order: the health server, the loop watchdog, node
registration, the Lease (its own task: no Vast call can ever starve it), node status, the one
instance poller, the EndpointSlice controller, the dispatcher, which owns the nursery of pod
supervisors, and the orphan reaper. Every task has an owner; nothing runs in the background
unowned.

On SIGTERM/SIGINT the root scope is cancelled. Pod tasks end without destroying anything
(instances keep running and the next process adopts them by label); the node is marked
NotReady on the way out so that the scheduler stops sending pods at once.

With ``--leader-elect`` the health server comes up first and the replica stands by until it
holds the Lease ``vk-trio-<node>`` (``vk_trio.kube.leader``); only then does it register the
node and start the rest, adopting every instance by its label as after a restart. The root
nursery is the leader's fenced scope: its deadline follows the Lease's renewals, and losing
the Lease cancels it, so a deposed leader stops driving at once and stands by again. A leader
stopping gracefully leaves the node Ready and releases the Lease, so a standby takes over
within one retry period (2 s).
"""

from __future__ import annotations

import argparse
import functools
import gc
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from loguru import logger

from vk_trio import __version__, config, metrics, startup
from vk_trio.annotations import NODE_SPEND
from vk_trio.config import Settings
from vk_trio.errors import PermanentError
from vk_trio.health import Health
from vk_trio.http_server import serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeError
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.kube.leader import Election, Elector, LeadershipLost, default_identity, lease_name
from vk_trio.kube.lease import run_lease
from vk_trio.kube.models import ConfigMap, Secret
from vk_trio.kube.node import NodeConfig, NodeStatusReporter, Taint, run_node_status
from vk_trio.kube.pods import get_config_map, get_pod, get_secret
from vk_trio.kube.watch import watch_pods
from vk_trio.logs import configure_logging, redact
from vk_trio.node.dispatch import Dispatcher
from vk_trio.node.endpoints import EndpointsController
from vk_trio.node.supervisor import NodeServices
from vk_trio.provider import VastProvider
from vk_trio.provider.budget import Budget
from vk_trio.provider.kubelet_backend import VastKubeletBackend, start_kubelet_api
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.reaper import run_reaper
from vk_trio.retry import NODE_REGISTER, UNLESS_PERMANENT, log_retry, retry_until_done, vast_policy
from vk_trio.vast import VastAuthError, VastClient
from vk_trio.vast.pacer import shared_pacer

RELEASE_TIMEOUT = 5.0
"""Seconds a stopping leader may spend giving its Lease up; past that the Lease expires."""


class NodeRuntime:
    """What a started node exposes to its caller (the demo, the tests)."""

    def __init__(self, health_url: str, dispatcher: Dispatcher, poller: InstancePoller) -> None:
        self.health_url = health_url
        self.dispatcher = dispatcher
        self.poller = poller


async def serve_node(
    settings: Settings,
    *,
    kubelet_api: bool = False,
    task_status: trio.TaskStatus[NodeRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the virtual node until cancelled.

    Reports a ``NodeRuntime`` once the node is registered and every pod bound to it has been
    listed and handed to its supervisor. ``kubelet_api`` also serves the kubelet API on
    ``settings.kubelet_port`` (``vk-trio run`` does; in-process callers opt in, since the
    port is fixed: it is what the Node advertises).
    """
    if settings.vast_api_key:
        redact(settings.vast_api_key)
    cluster = await load_config(kubeconfig=settings.kubeconfig)
    pacer = shared_pacer(settings.vast_api_key, settings.pacing)  # Vast limits per key
    elector = _elector(settings)
    async with (
        VastClient(
            api_key=settings.vast_api_key,
            base_url=settings.vast_api_url,
            pacer=pacer,
            retry=vast_policy(settings),
            fence=elector.fence if elector is not None else None,
        ) as vast,
        KubeClient.from_config(cluster) as kube,
    ):
        poller = InstancePoller(
            vast, node=settings.node_name, fast=settings.poll_fast, slow=settings.poll_slow
        )
        health = Health(
            vast_last_success=lambda: poller.last_success,
            vast_problem=lambda: _vast_problem(poller),
            vast_stale=max(5 * settings.poll_slow, 120.0),
        )
        health.debug_vars = lambda: {"pacer": pacer.stats(), "poller": poller.stats()}
        if elector is not None:
            health.standby = elector.standby_message
            health.standby_problem = elector.standby_problem
        node = NodeConfig(
            name=settings.node_name,
            internal_ip=settings.pod_ip,
            kubelet_port=settings.kubelet_port,
            kubelet_version=f"v1.31.0-vk-trio-{__version__}",
            capacity={
                "cpu": "1000",
                "memory": "8Ti",
                "pods": str(settings.max_pods),
                "nvidia.com/gpu": str(settings.gpu_capacity),
            },
            labels=config.parse_labels(settings.node_labels),
        )
        extra_taints = config.parse_taints(settings.node_taints)
        node.taints += [Taint(key=k, value=v, effect=e) for k, v, e in extra_taints]
        reporter = NodeStatusReporter(kube, node)
        async with _not_ready_on_failure(reporter, settings, elector) as root:
            health_url = await root.start(
                functools.partial(
                    serve_http, health.handle, host=settings.health_host, port=settings.health_port
                )
            )
            await root.start(health.watchdog)
            if elector is not None:
                await root.start(elector.run, kube, root.cancel_scope)  # stands by until leader
                # Taking over a node that is Ready: say Ready from the first write, no flap.
                reporter.expect(*_node_health(health))
            node_uid = await _register(reporter)
            health.node_registered = True
            logger.info("node registered", node=settings.node_name, uid=node_uid)
            events = EventRecorder(kube, component="vk-trio", host=settings.node_name)
            await events.emit_for(
                Involved.node(settings.node_name, node_uid),
                type="Normal",
                reason="Starting",
                message=f"Starting vk-trio {__version__} (Vast.ai provider)",
            )
            await root.start(
                functools.partial(
                    run_lease,
                    kube,
                    node_name=settings.node_name,
                    node_uid=lambda: reporter.uid,  # follows a re-created Node
                    duration=settings.lease_seconds,
                    # No `healthy` gate on Vast: a Vast outage must not make the node
                    # NotReady, or every pod would be evicted and its instance destroyed.
                )
            )
            await root.start(
                functools.partial(
                    run_node_status,
                    kube,
                    reporter,
                    health=lambda: _node_health(health),
                    events=events,
                )
            )
            await root.start(poller.run)
            if isinstance(poller.last_failure, VastAuthError):
                # Fail fast: nothing can work, and a crash-looping pod says so louder than
                # a Running one that is never ready. A key revoked later only degrades.
                raise poller.last_failure
            provider = VastProvider(
                settings=settings,
                vast=vast,
                poller=poller,
                objects=KubeObjects(kube),
                budget=Budget(
                    poller,
                    max_hourly=settings.max_hourly_spend,
                    max_instances=settings.max_instances,
                ),
            )
            services = NodeServices(
                settings=settings,
                kube=kube,
                events=events,
                provider=provider,
            )
            endpoints = EndpointsController(kube, services.events, node_name=settings.node_name)
            await root.start(endpoints.run)
            dispatcher = Dispatcher(services, observer=endpoints.pod_event)
            health.watch_synced = lambda: dispatcher.synced
            await root.start(dispatcher.run, watch_pods(kube, node_name=settings.node_name))
            if kubelet_api:
                backend = VastKubeletBackend(
                    vast,
                    poller,
                    pods=lambda: [handle.pod for handle in dispatcher.handles.values()],
                    node_name=settings.node_name,
                )
                await root.start(start_kubelet_api, settings, kube, cluster, backend)
            await root.start(
                functools.partial(
                    run_reaper,
                    vast,
                    poller,
                    live_uids=lambda: set(dispatcher.handles),
                    synced=lambda: dispatcher.synced,
                    pod_exists=functools.partial(_pod_exists, kube),
                    interval=settings.reap_interval,
                    destroy_timeout=settings.destroy_timeout,
                )
            )
            metrics.register_state(_state(dispatcher, poller))
            root.start_soon(_show_spend, reporter, poller, settings.poll_slow)
            await dispatcher.wait_synced()
            # What exists now (modules, clients, settings) lives as long as the process; a
            # full collection walking it every time paused the loop for 180-290 ms with 200
            # pods probing each second, 118 ms once frozen (`vk-trio bench --probes`; the
            # README's Benchmarks section has the rest of that story).
            gc.freeze()
            logger.info("node serving", node=settings.node_name, health=health_url)
            task_status.started(NodeRuntime(health_url, dispatcher, poller))
            try:
                await trio.sleep_forever()
            finally:
                metrics.register_state(None)
                if elector is None:  # else a standby takes over at once: the node stays Ready
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await reporter.report(ready=False, message="vk-trio is shutting down")


def _state(dispatcher: Dispatcher, poller: InstancePoller) -> metrics.StateSource:
    """What /metrics reads at each scrape: the pods the node runs and what Vast bills."""

    def pods() -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for handle in dispatcher.handles.values():
            status = handle.pod.status
            waiting = next(
                (c.state.waiting.reason for c in status.container_statuses if c.state.waiting),
                "",
            )
            counts[(status.phase or "Pending", waiting or "")] += 1
        return counts

    return metrics.StateSource(
        pods=pods,
        instances=lambda: Counter(i.actual_status or "scheduling" for i in poller.all_instances()),
        spend_per_hour=poller.spend_per_hour,
        spent=poller.spent,
    )


async def _show_spend(reporter: NodeStatusReporter, poller: InstancePoller, every: float) -> None:
    """Keep the Node's ``vast.ai/spend-per-hour`` annotation at what its instances bill."""
    shown: str | None = None
    while True:
        await trio.sleep(every)
        current = f"{poller.spend_per_hour():.4f}"
        if current != shown:
            try:
                await reporter.annotate({NODE_SPEND: current})
            except KubeError as exc:
                logger.warning("node spend annotation failed", error=str(exc))
                continue
            shown = current


class KubeObjects:
    """Secrets and ConfigMaps a pod references, read on demand (RBAC: get only, no informer)."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def secret(self, namespace: str, name: str) -> Secret | None:
        return await get_secret(self._kube, namespace, name)

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        return await get_config_map(self._kube, namespace, name)


@asynccontextmanager
async def _not_ready_on_failure(
    reporter: NodeStatusReporter, settings: Settings, elector: Elector | None
) -> AsyncIterator[trio.Nursery]:
    """The root nursery; if it fails after the node registered, the node says why, NotReady.

    Otherwise the Node would stay Ready until its Lease expired, and the scheduler would keep
    sending pods to a process that has exited. A replica that lost the leader election never
    writes the node (its new leader does); once every task has ended it raises
    ``LeadershipLost``. A leader that stops for any reason releases its Lease, after every
    task has ended, so that no call of ours can overlap the next leader's.
    """
    lost = None
    try:
        async with trio.open_nursery() as root:
            yield root
    except Exception as exc:
        if reporter.uid and (elector is None or elector.holds()):
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                why = startup.explain(exc, settings) or repr(startup.first_cause(exc))
                await reporter.report(ready=False, message=f"vk-trio stopped: {why}")
        raise
    finally:
        if elector is not None:
            lost = elector.lost_leadership()
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
                await elector.release()
    if lost is not None:
        raise LeadershipLost(lost)


def _elector(settings: Settings) -> Elector | None:
    if not settings.leader_elect:
        return None
    return Elector(
        Election(
            namespace=settings.leader_elect_namespace,
            name=lease_name(settings.node_name),
            identity=settings.leader_elect_identity or default_identity(),
            lease_duration=settings.leader_elect_lease_duration,
            renew_deadline=settings.leader_elect_renew_deadline,
            retry_period=settings.leader_elect_retry_period,
        )
    )


def _node_health(health: Health) -> tuple[bool, str]:
    problems = health.liveness_problems()
    if problems:
        return False, "; ".join(problems)
    return True, "kubelet is posting ready status"


async def _pod_exists(kube: KubeClient, namespace: str, name: str, uid: str) -> bool:
    pod = await get_pod(kube, namespace, name)
    return pod is not None and pod.uid == uid


DEGRADED_AFTER = 3
"""Failed sweeps in a row before readiness reports Vast as failing (one is a blip)."""


def _vast_problem(poller: InstancePoller) -> str | None:
    failure = poller.last_failure
    if isinstance(failure, PermanentError):
        return f"Vast API refuses our calls: {failure}"
    if failure is not None and poller.failures_in_a_row >= DEGRADED_AFTER:
        return f"Vast API failing ({poller.failures_in_a_row} sweeps in a row): {failure}"
    return None


async def _register(reporter: NodeStatusReporter) -> str:
    """Register the node, retrying until the API server accepts it (probes stay unready).

    A ``PermanentError`` (RBAC or credentials) escalates: an operator must act, and the exit
    line says so."""
    return await retry_until_done(
        reporter.register,
        schedule=NODE_REGISTER,
        on=UNLESS_PERMANENT,
        on_retry=log_retry("node registration failed; retrying"),
    )


DESCRIPTION = """\
Run the virtual node: register it with the cluster, rent a Vast.ai instance for each pod
scheduled onto it, and keep the pod's status true. This is the container's command
(deployments/virtual-kubelet-vast-python.yaml).

It needs a cluster (the in-cluster service account, or a kubeconfig) and VAST_API_KEY. A setting
out of range, a cluster that cannot be found, reached or that refuses the node, and a rejected
key stop it at start with one log line saying what to fix, exit status 2. SIGTERM or Ctrl-C
stop it (exit status 0) with the node marked NotReady; instances keep running and the next
start adopts them."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    config.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Exit 0 after SIGTERM/SIGINT; 2 when the setup cannot work, said in one log line."""
    configure_logging("INFO", sink=sys.stdout)
    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        logger.error(str(exc))
        return 2
    configure_logging(settings.log_level, sink=sys.stdout, log_format=settings.log_format)
    if not settings.vast_api_key:
        logger.error("VAST_API_KEY is not set; create the vast-api-secret Secret (see README)")
        return 2
    try:
        trio.run(_run_until_signal, settings)
    except Exception as exc:
        line = startup.explain(exc, settings)
        if line is None:
            raise
        logger.error(line)
        return 2
    return 0


async def _run_until_signal(settings: Settings) -> None:
    await startup.preflight(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_while_elected, settings)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info("stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _serve_while_elected(settings: Settings) -> None:
    """``serve_node``; after a lost leader election, everything it drove is gone: stand by
    again with fresh state (the next leadership adopts instances like a restart)."""
    while True:
        try:
            await serve_node(settings, kubelet_api=True)
            return
        except LeadershipLost as lost:
            logger.warning("lost the leader election; standing by again", reason=str(lost))
