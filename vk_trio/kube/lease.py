"""The node Lease: the heartbeat that keeps the node Ready (VK ``lease_controller_v1.go``).

Without a renewal every ``duration`` seconds the node lifecycle controller marks the node
Unknown, taints it unreachable and evicts its pods about five minutes later. So this task does
nothing but Kubernetes calls, is never blocked by anything else, and owns its own retries
(requests go out with ``retry=NO_RETRY``: a fresh renewal beats a stale retry).

Renewal: ``PUT`` the cached Lease with ``renewTime=now`` and the cached resourceVersion (no GET
needed). On a 409 the Lease changed under us: re-GET and retry, at most ``MAX_UPDATE_RETRIES``
times. On any other failure fall back to ``ensure``: GET, or POST if missing, with backoff along
``vk_trio.retry.LEASE_ENSURE``, then PUT again. The Lease is never
created without an ownerReference to the Node, so it is garbage-collected with the Node.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import trio
from loguru import logger

from vk_trio.errors import PermanentError
from vk_trio.kube.api import KubeClient, format_micro_time, utcnow
from vk_trio.kube.errors import KubeConflict, KubeError, KubeNotFound
from vk_trio.retry import LEASE_ENSURE, NO_RETRY, Retryable, log_retry, retry_until_done

__all__ = [
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_RENEW_FRACTION",
    "LEASE_NAMESPACE",
    "lease_body",
    "run_lease",
]

LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_LEASE_DURATION = 40
"""Seconds (upstream kubelet's value); the controller's grace period is 40-50 s."""
DEFAULT_RENEW_FRACTION = 0.25
"""Renew every ``duration * fraction`` seconds: 10 s, four chances before the lease runs out."""
MAX_UPDATE_RETRIES = 5
ENSURE_FAILURES = Retryable((KubeError,), never=(PermanentError,))
"""What ``ensure`` retries: every API error but RBAC or an invalid body."""


def _path(name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
    return f"{base}/{name}" if name else base


def _owner(node_name: str, node_uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}


def lease_body(*, node_name: str, node_uid: str, duration: int) -> dict[str, Any]:
    """A new Lease for ``node_name``, renewed now and owned by the Node (for garbage collection)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [_owner(node_name, node_uid)],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": duration,
            "renewTime": format_micro_time(utcnow()),
        },
    }


class _Renewer:
    """The cached Lease and the renew/ensure steps."""

    def __init__(
        self,
        client: KubeClient,
        *,
        node_name: str,
        node_uid: str | Callable[[], str],
        duration: int,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self._node_uid = node_uid
        self.duration = duration
        self.cached: dict[str, Any] | None = None

    @property
    def node_uid(self) -> str:
        """The Node's uid now (it changes if the Node had to be registered again)."""
        return self._node_uid() if callable(self._node_uid) else self._node_uid

    def _renewed(self, lease: dict[str, Any]) -> dict[str, Any]:
        """``lease`` with our holder, duration, renewTime=now and the Node as owner."""
        lease = copy.deepcopy(lease)
        spec = lease.setdefault("spec", {})
        spec["holderIdentity"] = self.node_name
        spec["leaseDurationSeconds"] = self.duration
        spec["renewTime"] = format_micro_time(utcnow())
        metadata = lease.setdefault("metadata", {})
        owners = [
            o
            for o in metadata.get("ownerReferences") or []
            if not (o.get("kind") == "Node" and o.get("name") == self.node_name)
        ]
        metadata["ownerReferences"] = [*owners, _owner(self.node_name, self.node_uid)]
        return lease

    async def renew(self) -> None:
        """PUT the cached lease (after ensure() if there is none); raises on failure."""
        for attempt in range(MAX_UPDATE_RETRIES + 1):
            if self.cached is None:
                await self.ensure()
            assert self.cached is not None
            try:
                self.cached = await self.client.request(
                    "PUT", _path(self.node_name), json=self._renewed(self.cached), retry=NO_RETRY
                )
                return
            except KubeConflict:
                if attempt >= MAX_UPDATE_RETRIES:
                    raise
                logger.debug("lease conflict; re-reading", lease=self.node_name)
                self.cached = await self._get()
            except KubeError:
                self.cached = None  # re-ensure on the next attempt (deleted, expired...)
                raise

    async def _get(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = await self.client.request(
                "GET", _path(self.node_name), retry=NO_RETRY
            )
        except KubeNotFound:
            return None
        return lease

    async def ensure(self) -> None:
        """GET the lease, or create it; retried until it works (but PermanentError escalates)."""
        self.cached = await retry_until_done(
            self._get_or_create,
            schedule=LEASE_ENSURE,
            on=ENSURE_FAILURES,
            on_retry=log_retry("lease write failed; retrying", lease=self.node_name),
        )

    async def _get_or_create(self) -> dict[str, Any]:
        lease = await self._get()
        if lease is not None:
            return lease
        body = lease_body(node_name=self.node_name, node_uid=self.node_uid, duration=self.duration)
        try:
            created: dict[str, Any] = await self.client.request(
                "POST", _path(), json=body, retry=NO_RETRY
            )
        except KubeConflict as conflict:  # created meanwhile: read it at once
            lease = await self._get()
            if lease is None:  # and deleted again: retried along the schedule
                raise conflict
            return lease
        logger.info("created lease", namespace=LEASE_NAMESPACE, lease=self.node_name)
        return created


async def run_lease(
    client: KubeClient,
    *,
    node_name: str,
    node_uid: str | Callable[[], str],
    duration: int = DEFAULT_LEASE_DURATION,
    renew_fraction: float = DEFAULT_RENEW_FRACTION,
    healthy: Callable[[], bool] = lambda: True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Renew the node's Lease every ``duration * renew_fraction`` seconds, forever.

    ``node_uid`` may be a callable (e.g. ``lambda: reporter.uid``): every renewal then points
    the ownerReference at the current Node, so a Node re-created after a deletion does not
    leave the Lease owned by a dead uid (which the garbage collector would delete).

    Renewals are skipped while ``healthy()`` is False (it must not block: read a flag kept
    by the provider ping), so an unhealthy backend makes the node go NotReady through the
    control plane, as in virtual-kubelet.

    ``task_status.started()`` fires after the first successful renewal, or at the first
    renewal skipped because ``healthy()`` is False (the task then works as intended, and the
    caller's start-up must not hang on a backend outage).

    Owns: the Lease object (creates it). Retries: every ``KubeError`` (see the module
    docstring), forever. Escalates: ``ValueError`` for a renew interval not below
    ``duration``; ``PermanentError`` (RBAC, invalid body) before the first renewal, through
    ``nursery.start``; afterwards it is logged and retried, because a node losing its lease
    over a transient RBAC hiccup is worse than log noise.
    """
    interval = duration * renew_fraction
    if not 0 < interval < duration:
        raise ValueError(
            f"renew interval {interval}s must be positive and below the lease duration {duration}s"
        )
    renewer = _Renewer(client, node_name=node_name, node_uid=node_uid, duration=duration)
    started = False
    while True:
        cycle_start = trio.current_time()
        if not healthy():
            logger.warning("provider unhealthy: not renewing the lease", lease=node_name)
        else:
            try:
                await renewer.renew()
            except PermanentError:
                if not started:
                    raise
                logger.exception("lease renewal refused", lease=node_name)
            except KubeError as error:
                # Renewal failed even after ensure(): try again soon, not a full interval later.
                logger.warning("lease renewal failed", lease=node_name, error=str(error))
                await trio.sleep(LEASE_ENSURE.first)
                continue
        if not started:
            started = True
            task_status.started()
        await trio.sleep_until(cycle_start + interval)
