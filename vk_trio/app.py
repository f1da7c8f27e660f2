"""``vk-trio run``: the virtual node, one process, one root nursery.

``serve_node`` is the table of contents: it builds the Vast backend
(``vk_trio.provider.wiring``), the Kubernetes client and the node's parts, and starts them in
one root nursery, in order: the health server, the loop watchdog, node registration, the
Lease (its own task: no Vast call can ever starve it), node status, the Vast backend (the one
instance poller, then the provider), the EndpointSlice controller, the dispatcher, which owns
the nursery of pod supervisors, the kubelet API, and the orphan reaper. Every task has an
owner; nothing runs in the background unowned.

On SIGTERM/SIGINT the root scope is cancelled. Pod tasks end without destroying anything
(instances keep running and the next process adopts them by label); the node is marked
NotReady on the way out so that the scheduler stops sending pods at once.

With ``--leader-elect`` the health server comes up first and the replica stands by until it
holds the Lease ``vk-trio-<node>`` (``vk_trio.election``); only then does it register the
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

import msgspec
import trio
from loguru import logger

from vk_trio import __version__, config, election, metrics, startup
from vk_trio.config import Settings
from vk_trio.health import Health
from vk_trio.http_server import serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeError
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.kube.lease import run_lease
from vk_trio.kube.node import NodeConfig, NodeStatusReporter, Taint, run_node_status
from vk_trio.kube.version import DEFAULT_KUBELET_VERSION, get_server_version, kubelet_version
from vk_trio.kube.watch import watch_pods
from vk_trio.kubelet.server import serve_kubelet_api
from vk_trio.kubelet.streaming.declared_features import declared_features
from vk_trio.logs import configure_logging
from vk_trio.node.dispatch import Dispatcher
from vk_trio.node.endpoints import EndpointsController
from vk_trio.node.lookup import PodLookup
from vk_trio.node.provider import Provider
from vk_trio.node.services import NodeServices
from vk_trio.provider.poller import InstancePoller
from vk_trio.provider.runtime import ImageConfigs
from vk_trio.provider.wiring import VastBackend, open_vast_backend
from vk_trio.retry import NODE_REGISTER, UNLESS_PERMANENT, log_retry, retry_until_done


class NodeRuntime:
    """What a started node exposes to its caller (the demo, the tests)."""

    def __init__(
        self,
        health_url: str,
        dispatcher: Dispatcher,
        poller: InstancePoller,
        provider: Provider,
    ) -> None:
        self.health_url = health_url
        self.dispatcher = dispatcher
        self.poller = poller
        self.provider = provider


async def serve_node(
    settings: Settings,
    *,
    kubelet_api: bool = False,
    images: ImageConfigs | None = None,
    task_status: trio.TaskStatus[NodeRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the virtual node until cancelled.

    Reports a ``NodeRuntime`` once the node is registered and every pod bound to it has been
    listed and handed to its supervisor. ``kubelet_api`` also serves the kubelet API on
    ``settings.kubelet_port`` (``vk-trio run`` does; in-process callers opt in, since the
    port is fixed: it is what the Node advertises). ``images`` answers for the agent's
    pods' image configs instead of their registries (the demo's stand-in images).
    """
    cluster = await load_config(kubeconfig=settings.kubeconfig)
    elector = election.elector_for(settings)
    fence = elector.fence if elector is not None else None
    async with (
        open_vast_backend(settings, fence=fence) as vast,
        KubeClient.from_config(cluster) as kube,
    ):
        vast.images = images
        reporter = NodeStatusReporter(
            kube, _node_config(settings, await _kubelet_version(kube), kubelet_api=kubelet_api)
        )
        async with election.root(reporter, settings, elector) as root:
            health, health_url = await _start_probes(root, settings, vast)
            if elector is not None:  # stands by until it leads
                await election.stand_by(root, elector, kube, health, reporter)
            events = await _register(reporter, kube, health)
            await _start_heartbeat(root, settings, kube, reporter, health, events)
            provider = await root.start(vast.run, kube, reporter)
            services = NodeServices(settings=settings, kube=kube, events=events, provider=provider)
            endpoints = EndpointsController(kube, services.events, node_name=settings.node_name)
            await root.start(endpoints.run)
            dispatcher = Dispatcher(services, observer=endpoints.pod_event)
            health.watch_synced = lambda: dispatcher.synced
            await root.start(dispatcher.run, watch_pods(kube, node_name=settings.node_name))
            if kubelet_api:
                pods = PodLookup(dispatcher.handles, node_name=settings.node_name)
                await root.start(serve_kubelet_api, settings, kube, cluster, pods, provider)
            await root.start(vast.reap, kube, dispatcher)
            metrics.register_state(vast.metrics_state(dispatcher.phase_counts))
            await dispatcher.wait_synced()
            _freeze_start_up_objects()
            logger.info("node serving", node=settings.node_name, health=health_url)
            task_status.started(NodeRuntime(health_url, dispatcher, vast.poller, provider))
            await _serve_until_stopped(reporter, leader_elect=elector is not None)


async def _start_probes(
    root: trio.Nursery, settings: Settings, vast: VastBackend
) -> tuple[Health, str]:
    """``/healthz``, ``/readyz``, ``/metrics`` and the loop watchdog; returns the probes'
    state and URL."""
    health = Health(
        vast_last_success=vast.last_success, vast_problem=vast.problem, vast_stale=vast.stale
    )
    health.debug_vars = vast.debug_vars
    url = await root.start(
        functools.partial(
            serve_http, health.handle, host=settings.health_host, port=settings.health_port
        )
    )
    await root.start(health.watchdog)
    return health, url


async def _start_heartbeat(
    root: trio.Nursery,
    settings: Settings,
    kube: KubeClient,
    reporter: NodeStatusReporter,
    health: Health,
    events: EventRecorder,
) -> None:
    """The node's Lease and status, each its own task, so no Vast call can ever starve them.

    No ``healthy`` gate on Vast: a Vast outage must not make the node NotReady, or every pod
    would be evicted and its instance destroyed.
    """
    await root.start(
        functools.partial(
            run_lease,
            kube,
            node_name=settings.node_name,
            node_uid=lambda: reporter.uid,  # follows a re-created Node
            duration=settings.lease_seconds,
        )
    )
    await root.start(
        functools.partial(run_node_status, kube, reporter, health=health.node_ready, events=events)
    )


async def _kubelet_version(kube: KubeClient) -> str:
    """The kubelet version the node reports: the API server's minor (``vk_trio.kube.version``),
    or the default, said in the log, if the API server's version cannot be read."""
    try:
        server = await get_server_version(kube)
    except (KubeError, msgspec.ValidationError) as exc:
        logger.warning(
            "cannot read the API server's version; reporting the default kubelet version",
            error=str(exc),
            kubelet_version=DEFAULT_KUBELET_VERSION,
        )
        return DEFAULT_KUBELET_VERSION
    version = kubelet_version(server)
    if version is None:
        logger.warning(
            "the API server's version names no release; reporting the default kubelet version",
            server=server.git_version or f"{server.major}.{server.minor}",
            kubelet_version=DEFAULT_KUBELET_VERSION,
        )
        return DEFAULT_KUBELET_VERSION
    return version


def _node_config(
    settings: Settings, kubelet_version: str, *, kubelet_api: bool = False
) -> NodeConfig:
    """The Node object as the settings describe it (capacity, labels, taints, address), with
    ``kubelet_version`` as its kubelet's. ``kubelet_api``: this process serves the kubelet
    API, whose streaming routes speak WebSocket, so the Node declares
    ``ExtendWebSocketsToKubelet`` (a node without the API must not: a 1.36 API server would
    then send kubectl's WebSocket to a kubelet that is not there)."""
    node = NodeConfig(
        name=settings.node_name,
        internal_ip=settings.pod_ip,
        kubelet_port=settings.kubelet_port,
        kubelet_version=kubelet_version,
        capacity={
            "cpu": "1000",
            "memory": "8Ti",
            "pods": str(settings.max_pods),
            "nvidia.com/gpu": str(settings.gpu_capacity),
        },
        labels=config.parse_labels(settings.node_labels),
        declared_features=declared_features(websocket_streaming=kubelet_api),
    )
    extra_taints = config.parse_taints(settings.node_taints)
    node.taints += [Taint(key=k, value=v, effect=e) for k, v, e in extra_taints]
    return node


async def _register(
    reporter: NodeStatusReporter, kube: KubeClient, health: Health
) -> EventRecorder:
    """Register the node, retrying until the API server accepts it (probes stay unready),
    and say so in an Event on it; returns the node's Event recorder."""
    node = reporter.config.name
    node_uid = await retry_until_done(  # a PermanentError (RBAC, credentials) escalates
        reporter.register,
        schedule=NODE_REGISTER,
        on=UNLESS_PERMANENT,
        on_retry=log_retry("node registration failed; retrying"),
    )
    health.node_registered = True
    logger.info("node registered", node=node, uid=node_uid)
    events = EventRecorder(kube, component="vk-trio", host=node)
    await events.emit_for(
        Involved.node(node, node_uid),
        type="Normal",
        reason="Starting",
        message=f"Starting vk-trio {__version__} (Vast.ai provider)",
    )
    return events


def _freeze_start_up_objects() -> None:
    """What exists now (modules, clients, settings) lives as long as the process; a full
    collection walking it every time paused the loop for 180-290 ms with 200 pods probing
    each second, 118 ms once frozen (`vk-trio bench --probes`; the README's Benchmarks
    section has the rest of that story)."""
    gc.freeze()


async def _serve_until_stopped(reporter: NodeStatusReporter, *, leader_elect: bool) -> None:
    """Serve until cancelled; then a lone node says NotReady on its way out, so that the
    scheduler stops sending pods at once (with ``--leader-elect`` a standby takes over at
    once, and the node stays Ready)."""
    try:
        await trio.sleep_forever()
    finally:
        metrics.register_state(None)
        if not leader_elect:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await reporter.report(ready=False, message="vk-trio is shutting down")


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
        serve = functools.partial(serve_node, settings, kubelet_api=True)
        nursery.start_soon(election.serve_while_elected, serve)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info("stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
