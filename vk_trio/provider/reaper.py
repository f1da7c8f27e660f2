"""Destroy instances labelled for this node whose pod no longer exists (orphans).

Orphans appear when a pod was deleted while no vk-trio process was running, or when a lost
create answer was followed by another buy. They cost money, so they are found from the
poller's snapshot and destroyed; but destroying a live pod's instance would be worse, so:

- nothing runs before the pod watch has synced (kip #107: a sweep before the cache was
  complete deleted live workloads);
- an instance is destroyed only after it has been an orphan in two consecutive rounds, each
  over a newer poller sweep (kip's two-strike rule), so a pod that was just added, or one
  whose teardown the last sweep has not caught up with, is never mistaken for an orphan;
- and only after the API server, asked right then for the pod its label names, answers that
  no pod with that UID exists. A watch that silently fell behind, or an API server that cannot
  be reached, therefore never costs a live workload its GPU: no answer, no destroy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing

import trio
from loguru import logger

from vk_trio.errors import VkError
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import VastClient


async def run_reaper(
    vast: VastClient,
    poller: InstancePoller,
    *,
    live_uids: Callable[[], set[str]],
    synced: Callable[[], bool],
    pod_exists: Callable[[str, str, str], Awaitable[bool]],
    interval: float = 60.0,
    destroy_timeout: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval`` seconds, destroy instances whose pod UID is not live (two strikes).

    ``pod_exists(namespace, name, uid)`` asks the API server; it raises when it cannot tell.
    Owns nothing; a failed check or destroy is logged and retried on the next round.
    """
    task_status.started()
    strikes: dict[str, int] = {}
    async with aclosing(poller.rounds(interval, synced)) as rounds:
        async for _ in rounds:
            orphans = poller.all_uids() - live_uids()
            strikes = {uid: strikes.get(uid, 0) + 1 for uid in orphans}
            for uid, count in strikes.items():
                if count < 2 or not await _confirmed_orphan(poller, uid, pod_exists):
                    continue
                instances = poller.instances(uid)
                for instance in instances:
                    try:
                        with trio.CancelScope(shield=True), trio.fail_after(destroy_timeout):
                            await vast.destroy_instance(instance.id)
                    except (VkError, trio.TooSlowError) as exc:
                        logger.warning(
                            "orphan destroy failed", instance_id=instance.id, error=str(exc)
                        )
                        continue
                    logger.warning(
                        "destroyed orphan instance", instance_id=instance.id, label=instance.label
                    )
                poller.hurry(i.id for i in instances)


async def _confirmed_orphan(
    poller: InstancePoller, uid: str, pod_exists: Callable[[str, str, str], Awaitable[bool]]
) -> bool:
    """True only when the API server says the pod named by ``uid``'s labels is gone."""
    for owner in {poller.owner(instance) for instance in poller.instances(uid)}:
        if owner is None:
            return False
        try:
            if await pod_exists(*owner):
                logger.warning("instance looked orphaned but its pod exists", uid=uid)
                return False
        except Exception as exc:  # no answer, no destroy
            logger.warning("cannot confirm an orphan; keeping it", uid=uid, error=str(exc))
            return False
    return True
