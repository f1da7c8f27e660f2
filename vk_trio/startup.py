"""Failing at start the way a user can act on: one line naming the cause and the fix, exit 2.

``vk-trio run`` checks what a user can get wrong before the node registers, so that a bad
setup never shows a node in the cluster (``preflight``): the kubeconfig (or the in-cluster
service account), that the API server answers and lets us read our Node, and that Vast.ai
accepts the key. A Vast outage at start is not fatal (the node serves and reports it on
``/readyz``); only a rejected key is, because nothing could work.

What goes wrong later anyway (RBAC that allows reading Nodes but not creating them or the
Lease, a key revoked a second after the check, the probe port taken) escapes ``trio.run`` as
an exception group; ``explain`` turns its one cause into the same kind of line.
"""

from __future__ import annotations

import errno
import os

import trio
from loguru import logger

from vk_trio.config import Settings
from vk_trio.errors import TemporaryError, VkError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import ClusterConfig, ConfigError, load_config
from vk_trio.kube.errors import KubeError, KubeForbidden, KubeNotFound
from vk_trio.retry import NO_RETRY
from vk_trio.vast import VastAuthError, VastClient
from vk_trio.vast.pacer import shared_pacer

__all__ = ["StartupError", "explain", "first_cause", "preflight"]

VAST_CHECK_TIMEOUT = 15.0
"""Seconds the key check may take; past that Vast counts as down, which is not fatal."""

RBAC_FIX = (
    "apply deployments/virtual-kubelet-vast-python.yaml (its ServiceAccount and RBAC), or use "
    "a kubeconfig whose user may get, create and patch nodes, leases, pods and events"
)
KEY_FIX = "check the api-key in the vast-api-secret Secret (or VAST_API_KEY / VAST_API_KEY_FILE)"


class StartupError(Exception):
    """The node cannot start; the message is the one line the user reads."""


async def preflight(settings: Settings) -> None:
    """Raise ``StartupError`` if the cluster or Vast.ai would refuse this node; else return.

    Bounded: the API server gets the client's usual retries (a few seconds), Vast.ai one try
    within ``VAST_CHECK_TIMEOUT``.
    """
    cluster = await _cluster(settings)
    async with KubeClient.from_config(cluster) as kube:
        try:
            await kube.request("GET", f"/api/v1/nodes/{settings.node_name}")
        except KubeNotFound:
            pass  # a first start: registration creates it
        except KubeError as exc:
            raise StartupError(_kube_line(exc, cluster.server)) from None
    pacer = shared_pacer(settings.vast_api_key, settings.pacing)  # Vast limits per key
    async with VastClient(
        api_key=settings.vast_api_key,
        base_url=settings.vast_api_url,
        pacer=pacer,
        retry=NO_RETRY,
    ) as vast:
        with trio.move_on_after(VAST_CHECK_TIMEOUT) as deadline:
            try:
                await vast.list_instances()
            except VastAuthError as exc:
                raise StartupError(_key_line(exc)) from None
            except VkError as exc:  # an outage, a 429, a garbled page: the poller copes
                logger.warning("Vast.ai is failing at start; serving anyway", error=str(exc))
        if deadline.cancelled_caught:
            logger.warning("Vast.ai did not answer at start; serving anyway")


async def _cluster(settings: Settings) -> ClusterConfig:
    """The cluster configuration, or a ``StartupError`` saying which file or variable to fix."""
    named = settings.kubeconfig
    if named:
        found = [
            await (await trio.Path(path).expanduser()).exists()
            for path in named.split(os.pathsep)
            if path
        ]
        if not any(found):
            raise StartupError(
                f"KUBECONFIG (--kubeconfig) names {named}, which does not exist; point it at "
                "a kubeconfig, or unset it inside a cluster"
            )
    try:
        return await load_config(kubeconfig=named)
    except ConfigError as exc:
        raise StartupError(
            f"cannot use the cluster configuration: {exc}; outside a cluster set KUBECONFIG "
            "(--kubeconfig) to a valid kubeconfig or create ~/.kube/config"
        ) from None


def _kube_line(exc: KubeError, server: str) -> str:
    if isinstance(exc, KubeForbidden):
        return f"the Kubernetes API server at {server} refused vk-trio ({exc}); {RBAC_FIX}"
    if isinstance(exc, TemporaryError):
        return (
            f"cannot reach the Kubernetes API server at {server} ({exc}); check that it is up "
            "and that the kubeconfig (KUBECONFIG) names the right server"
        )
    return f"the Kubernetes API server at {server} answered an error ({exc})"


def _key_line(exc: VastAuthError) -> str:
    return f"Vast.ai rejected VAST_API_KEY ({exc}); {KEY_FIX}"


def explain(error: BaseException, settings: Settings) -> str | None:
    """The one line for a start-up failure a user caused, or None for anything else (a bug,
    whose traceback is then worth reading)."""
    cause = first_cause(error)
    if isinstance(cause, StartupError):
        return str(cause)
    if isinstance(cause, VastAuthError):
        return _key_line(cause)
    if isinstance(cause, KubeForbidden):
        return f"the Kubernetes API server refused vk-trio ({cause}); {RBAC_FIX}"
    if isinstance(cause, OSError) and cause.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return (
            f"cannot serve the health probes on {settings.health_host}:{settings.health_port} "
            f"({cause.strerror}); set HEALTH_PORT (--health-port) or HEALTH_HOST (--health-host)"
        )
    return None


def first_cause(error: BaseException) -> BaseException:
    """The error that stopped the node: the first one inside nested nursery groups that is
    not a cancellation (those are the echo of the cause cancelling its siblings)."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves = [first_cause(inner) for inner in error.exceptions]
    return next((leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)), leaves[0])
