"""Budgets per namespace: what the pods of one Namespace may rent, across every vk-trio node.

A Namespace annotated ``vast.ai/max-hourly-spend`` (USD/h) and/or ``vast.ai/max-instances``
caps its pods' instances on *all* nodes of the cluster together. Nodes share no memory and may
decide at the same moment, so the shared state lives on the Namespace itself, in the
annotation ``vast.ai/budget-holds``: per node name, per pod UID, the pod's name and the price
it holds or rents (``{"vast-gpu-a": {"<uid>": {"pod": "train-0", "usd": 0.3}}}``).

The protocol (a compare-and-swap on the Namespace's resourceVersion):

1. **hold, before the create is sent**: GET the Namespace; usage is the sum (and count) of
   every node's holds but this pod's; if this pod's price does not fit the caps, the pod waits
   (``NamespaceBudgetReached``, the message naming the caps) and nothing is written. If it
   fits, the hold is added and the annotation written with a merge patch that carries the
   ``metadata.resourceVersion`` read: the API server applies it only if nobody wrote since,
   else 409, and the node re-reads and decides again (``NAMESPACE_CONFLICTS`` times, then the
   pod waits a turn). Two nodes deciding at once therefore cannot both take the last room;
   within one process, writes to one Namespace take turns (a lock), so its own pods do not
   race each other.
   Only then is the buy intent written on the pod and the create sent (``buying``).
2. **release, after the destroy**: the pod's hold is removed the same way once its instances
   are destroyed (``VastProvider.release``), or when its buy came to nothing. A failed release
   raises, and the pod's teardown retries it as it retries the destroy.
3. **restarts and fail-over lose nothing**: nothing the protocol needs is kept in memory
   (``holding`` only spares a read after a failed buy); a node's next process
   (or the replica that takes its Lease; holds are keyed by node name, not process) finds its
   holds on the Namespaces and releases them as its pods go. A node that is down keeps its
   holds, which keep counting for everyone: its instances may still bill.
4. **stale holds** (a pod deleted while its node was down, a release lost with the process)
   are removed only by the node that owns them (``run_tidy``), with the reaper's rules: after
   the pod watch synced, when the hold's pod is not one of the node's live pods and no
   instance is listed for it in two consecutive rounds over newer sweeps, and the API server,
   asked right then, answers that no pod with that UID exists. No answer, no removal: a stale
   hold only costs room, never money.

Most namespaces have no budget, so a Namespace read with no cap and no hold of this node is
*quiet* for ``QUIET_FOR`` seconds: meanwhile its pods' holds and releases ask nothing of the
API server (one GET per namespace per period instead of one per buy and per deletion).

Limits: holds are written only while a cap is set, so pods that were running before the cap
was added (or bought within ``QUIET_FOR`` of it) do not count against it until they are
replaced. A node tidies the namespaces its
process has seen its pods hold in, or its instances live in; a hold orphaned in another
namespace stays (counting, so safe) until one of its pods holds there again. Malformed caps or
holdings stop buying in that namespace (``InvalidAnnotation`` on its pods) until fixed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import NamedTuple, Protocol

import msgspec
import trio
from loguru import logger

from vk_trio.annotations import NAMESPACE_HOLDS, NAMESPACE_MAX_HOURLY, NAMESPACE_MAX_INSTANCES
from vk_trio.errors import VkError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeConflict
from vk_trio.kube.models import Pod
from vk_trio.kube.namespaces import get_namespace, patch_namespace_annotations
from vk_trio.provider.poller import InstancePoller
from vk_trio.retry import NAMESPACE_CONFLICT, NAMESPACE_CONFLICTS

__all__ = [
    "NAMESPACE_BUDGET_REACHED",
    "QUIET_FOR",
    "Caps",
    "Hold",
    "NamespaceBudget",
    "NamespaceBudgetError",
    "NamespaceHolds",
    "parse_caps",
    "parse_holdings",
    "refusal",
    "run_tidy",
]

QUIET_FOR = 15.0
"""Seconds a Namespace read with no cap and no hold of this node is trusted to stay so (the
default slow sweep): how late a newly added cap may start to count."""

NAMESPACE_BUDGET_REACHED = "NamespaceBudgetReached"
"""The waiting reason of a pod whose namespace's caps are used up."""


class NamespaceBudgetError(ValueError):
    """A Namespace's budget annotations cannot be read; the message names which and why."""


class Hold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one pod holds or rents: its name (to ask the API server about it) and USD/h."""

    pod: str
    usd: float


Holdings = dict[str, dict[str, Hold]]
"""Node name -> pod UID -> its hold."""


class Caps(msgspec.Struct, frozen=True):
    max_hourly: float | None = None
    max_instances: int | None = None


def parse_caps(namespace: str, annotations: Mapping[str, str]) -> Caps:
    """The caps a Namespace's annotations set (``NamespaceBudgetError`` if malformed)."""
    hourly = annotations.get(NAMESPACE_MAX_HOURLY)
    count = annotations.get(NAMESPACE_MAX_INSTANCES)
    caps = Caps()
    if hourly is not None:
        try:
            value = float(hourly.strip().removeprefix("$"))
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise NamespaceBudgetError(
                f'namespace {namespace}: {NAMESPACE_MAX_HOURLY} "{hourly}" is not a USD per '
                'hour amount (e.g. "1.50")'
            )
        caps = Caps(max_hourly=value)
    if count is not None:
        if not (count.strip().isascii() and count.strip().isdigit()):
            raise NamespaceBudgetError(
                f'namespace {namespace}: {NAMESPACE_MAX_INSTANCES} "{count}" is not a whole '
                'number of instances (e.g. "3")'
            )
        caps = Caps(max_hourly=caps.max_hourly, max_instances=int(count))
    return caps


def parse_holdings(namespace: str, annotations: Mapping[str, str]) -> Holdings:
    """Every node's holds on a Namespace (``NamespaceBudgetError`` if malformed)."""
    text = annotations.get(NAMESPACE_HOLDS)
    if not text:
        return {}
    try:
        return msgspec.json.decode(text, type=Holdings)
    except msgspec.DecodeError as exc:
        raise NamespaceBudgetError(
            f"namespace {namespace}: {NAMESPACE_HOLDS} cannot be read ({exc}); fix or remove it"
        ) from exc


def _encode(holdings: Holdings) -> str:
    """The annotation's value, ``""`` when nothing is held (nodes with no holds dropped)."""
    kept = {node: holds for node, holds in holdings.items() if holds}
    return msgspec.json.encode(kept, order="sorted").decode() if kept else ""


def refusal(namespace: str, caps: Caps, holdings: Holdings, uid: str, price: float) -> str | None:
    """Why pod ``uid`` may not take ``price`` USD/h under ``caps`` now, or None if it fits."""
    others = [h for holds in holdings.values() for u, h in holds.items() if u != uid]
    spend, count = sum(h.usd for h in others), len(others)
    if caps.max_instances is not None and count + 1 > caps.max_instances:
        return (
            f"namespace {namespace} instance cap reached: {count} of its {caps.max_instances}"
            f" ({NAMESPACE_MAX_INSTANCES}) held across nodes"
        )
    if caps.max_hourly is not None and spend + price > caps.max_hourly + 1e-9:
        return (
            f"namespace {namespace} budget reached: ${spend:.3f}/h of its "
            f"${caps.max_hourly:.3f}/h ({NAMESPACE_MAX_HOURLY}) held by {count} pods across "
            f"nodes, this pod needs ${price:.3f}/h"
        )
    return None


Change = Callable[[Mapping[str, str], Holdings], str | None]
"""Edits the holdings read (in place), given the Namespace's annotations; returns why the
pod must wait instead (nothing is written then)."""


class NamespaceHolds(Protocol):
    """What the buyer asks of the namespace budgets (``NamespaceBudget``; a fake in tests)."""

    async def hold(self, pod: Pod, price: float) -> tuple[str, str] | None: ...

    async def release(self, pod: Pod) -> None: ...

    def holding(self, pod: Pod) -> bool: ...


class NamespaceBudget:
    """This node's side of the namespace budgets: hold, release, and tidy its own holds."""

    def __init__(self, kube: KubeClient, *, node: str, quiet_for: float = QUIET_FOR) -> None:
        self._kube = kube
        self._node = node
        self._quiet_for = quiet_for
        self._quiet: dict[str, float] = {}
        """Namespace → when it was last read with no cap and no hold of this node."""
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        """One writer per namespace in this process: its pods race other nodes, not each
        other."""
        self.namespaces: set[str] = set()
        """Namespaces this process saw its pods hold in, or its instances live in (tidied)."""
        self._holding: set[str] = set()
        """UIDs of pods this process gave a hold and has not released (``holding``)."""

    async def hold(self, pod: Pod, price: float) -> tuple[str, str] | None:
        """Take room for ``pod`` at ``price`` in its namespace's budget, on the Namespace,
        before anything is bought: None when taken (or no cap), else (reason, message)."""
        namespace, uid = pod.metadata.namespace, pod.uid
        if self._is_quiet(namespace):
            return None

        def take(annotations: Mapping[str, str], holdings: Holdings) -> str | None:
            caps = parse_caps(namespace, annotations)
            if caps == Caps():
                return None  # no cap: nothing to hold against
            refused = refusal(namespace, caps, holdings, uid, price)
            if refused is None:
                holdings.setdefault(self._node, {})[uid] = Hold(pod.metadata.name, price)
                self._holding.add(uid)
            return refused

        try:
            refused = await self._update(namespace, take)
        except NamespaceBudgetError as exc:
            return "InvalidAnnotation", str(exc)
        except VkError as exc:
            return "KubeAPIError", f"cannot check namespace {namespace}'s budget: {exc}"
        return None if refused is None else (NAMESPACE_BUDGET_REACHED, refused)

    async def release(self, pod: Pod) -> None:
        """``pod`` bought nothing, or its instances are destroyed: free its room. Raises
        ``VkError`` when the Namespace cannot be written (the caller retries)."""
        if pod.uid not in self._holding and self._is_quiet(pod.metadata.namespace):
            return  # read lately with no hold of this node: there is nothing to free
        await self.drop(pod.metadata.namespace, {pod.uid})
        self._holding.discard(pod.uid)

    def _is_quiet(self, namespace: str) -> bool:
        seen = self._quiet.get(namespace)
        return seen is not None and trio.current_time() - seen < self._quiet_for

    def holding(self, pod: Pod) -> bool:
        """Whether this process gave ``pod`` a hold it has not released. Only a shortcut for
        a buy that just failed: a pod adopted from an earlier process may hold one unknown
        here, which ``release`` (always asking the Namespace) frees."""
        return pod.uid in self._holding

    async def own_holds(self, namespace: str) -> dict[str, Hold]:
        """This node's holds in ``namespace``."""
        current = await get_namespace(self._kube, namespace)
        if current is None:
            return {}
        return parse_holdings(namespace, current.metadata.annotations).get(self._node, {})

    async def drop(self, namespace: str, uids: set[str]) -> None:
        """Remove this node's holds for ``uids`` in ``namespace``."""

        def remove(_: Mapping[str, str], holdings: Holdings) -> None:
            for uid in uids:
                holdings.get(self._node, {}).pop(uid, None)

        try:
            await self._update(namespace, remove)
        except NamespaceBudgetError as exc:  # nothing to remove from until a human fixes it
            logger.warning("namespace budget unreadable; hold not released", error=str(exc))

    async def _update(self, namespace: str, change: Change) -> str | None:
        """Read, ``change``, write back if changed, with the resourceVersion read as the
        precondition; re-read and change again on a conflict. The first read takes no lock:
        in a namespace without a cap (most of them) nothing is ever written, and a refusal
        read without the lock is as safe as one read with it."""
        self.namespaces.add(namespace)
        attempt = await self._attempt(namespace, change)
        if attempt.write is None:
            return attempt.refused
        async with self._locks[namespace]:
            delays = NAMESPACE_CONFLICT.delays()
            for _ in range(NAMESPACE_CONFLICTS):
                attempt = await self._attempt(namespace, change)
                if attempt.write is None:
                    return attempt.refused
                try:
                    await patch_namespace_annotations(
                        self._kube,
                        namespace,
                        resource_version=attempt.version,
                        annotations={NAMESPACE_HOLDS: attempt.write or None},
                    )
                except KubeConflict:
                    await trio.sleep(delays.next())
                    continue
                return None
        raise KubeConflict(
            f"namespace {namespace}: the budget write lost {NAMESPACE_CONFLICTS} races in a row",
            status=409,
        )

    async def _attempt(self, namespace: str, change: Change) -> _Attempt:
        """Read the Namespace and apply ``change`` to what it holds."""
        current = await get_namespace(self._kube, namespace)
        if current is None:
            return _Attempt(None, None, "")  # the namespace, and so its pods, are gone
        meta = current.metadata
        holdings = parse_holdings(namespace, meta.annotations)
        uncapped = NAMESPACE_MAX_HOURLY not in meta.annotations and (
            NAMESPACE_MAX_INSTANCES not in meta.annotations
        )
        if uncapped and not holdings.get(self._node):
            self._quiet[namespace] = trio.current_time()
        else:
            self._quiet.pop(namespace, None)
        before = _encode(holdings)
        refused = change(meta.annotations, holdings)
        after = _encode(holdings)
        if refused is not None or after == before:
            return _Attempt(refused, None, meta.resource_version)
        return _Attempt(None, after, meta.resource_version)


class _Attempt(NamedTuple):
    refused: str | None
    """Why the change was refused (nothing to write)."""
    write: str | None
    """The annotation's new value (``""``: remove it), None when nothing changes."""
    version: str
    """The resourceVersion it was read at: the write's precondition."""


PodExists = Callable[[str, str, str], Awaitable[bool]]
"""``pod_exists(namespace, name, uid)``: asks the API server; raises when it cannot tell."""


async def run_tidy(
    budget: NamespaceBudget,
    poller: InstancePoller,
    *,
    live_uids: Callable[[], set[str]],
    synced: Callable[[], bool],
    pod_exists: PodExists,
    interval: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval`` seconds, remove this node's stale holds (module docstring, 4)."""
    task_status.started()
    strikes: dict[str, int] = {}
    async with aclosing(poller.rounds(interval, synced)) as rounds:
        async for _ in rounds:
            owners = (poller.owner(i) for i in poller.all_instances())
            budget.namespaces.update(o.namespace for o in owners if o is not None)
            live = live_uids()
            new_strikes: dict[str, int] = {}
            for namespace in sorted(budget.namespaces):
                await _tidy_namespace(
                    budget, poller, namespace, live, pod_exists, strikes, new_strikes
                )
            strikes = new_strikes


async def _tidy_namespace(
    budget: NamespaceBudget,
    poller: InstancePoller,
    namespace: str,
    live: set[str],
    pod_exists: PodExists,
    strikes: dict[str, int],
    new_strikes: dict[str, int],
) -> None:
    """Strike this node's idle holds in ``namespace``; drop those struck twice whose pod the
    API server says is gone."""
    try:
        holds = await budget.own_holds(namespace)
    except (VkError, NamespaceBudgetError) as exc:
        logger.warning("cannot read a namespace budget to tidy it", ns=namespace, error=str(exc))
        return
    idle = {u: h for u, h in holds.items() if u not in live and not poller.instances(u)}
    for uid in idle:
        new_strikes[uid] = strikes.get(uid, 0) + 1
    gone = {
        uid
        for uid, hold in idle.items()
        if new_strikes[uid] >= 2 and await _confirmed_gone(pod_exists, namespace, hold.pod, uid)
    }
    if not gone:
        return
    try:
        await budget.drop(namespace, gone)
    except VkError as exc:
        logger.warning("stale namespace holds not removed yet", ns=namespace, error=str(exc))
        return
    logger.info("removed stale namespace holds", ns=namespace, uids=sorted(gone))


async def _confirmed_gone(pod_exists: PodExists, namespace: str, name: str, uid: str) -> bool:
    """True only when the API server says no pod with ``uid`` exists (no answer: False)."""
    try:
        return not await pod_exists(namespace, name, uid)
    except Exception as exc:
        logger.warning("cannot confirm a stale hold; keeping it", uid=uid, error=str(exc))
        return False
