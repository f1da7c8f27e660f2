"""``--leader-elect``: run the node only while this replica holds its Lease.

The election itself (client-go's Lease protocol, fenced by a trio deadline) is
``vk_trio.kube.leader``; this module is the loop around the node. ``serve_while_elected``
stands by until elected, serves, and after a lost election stands by again with fresh state
(the next leadership adopts every instance by its label, as after a restart). ``root`` is the
node's root nursery: its failure makes the node say why, NotReady, and a leader that stops for
any reason releases its Lease once every task has ended, so that no call of ours can overlap
the next leader's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
from loguru import logger

from vk_trio import startup
from vk_trio.config import Settings
from vk_trio.errors import LeadershipLost
from vk_trio.health import Health
from vk_trio.kube.api import KubeClient
from vk_trio.kube.leader import Election, Elector, default_identity, lease_name
from vk_trio.kube.node import NodeStatusReporter

__all__ = ["RELEASE_TIMEOUT", "elector_for", "root", "serve_while_elected", "stand_by"]

RELEASE_TIMEOUT = 5.0
"""Seconds a stopping leader may spend giving its Lease up; past that the Lease expires."""


def elector_for(settings: Settings) -> Elector | None:
    """The replica's elector with ``--leader-elect``; None when it drives the node alone."""
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


async def stand_by(
    root: trio.Nursery,
    elector: Elector,
    kube: KubeClient,
    health: Health,
    reporter: NodeStatusReporter,
) -> None:
    """Run the election in ``root`` and return once this replica leads; until then the
    probes say ``standby``. The root scope is the leader's fenced scope: losing the Lease
    cancels it."""
    health.standby = elector.standby_message
    health.standby_problem = elector.standby_problem
    await root.start(elector.run, kube, root.cancel_scope)
    reporter.expect(*health.node_ready())  # taking over a node that is Ready: no flap


async def serve_while_elected(serve: Callable[[], Awaitable[None]]) -> None:
    """``serve()``; after a lost leader election, everything it drove is gone: stand by
    again with fresh state."""
    while True:
        try:
            await serve()
            return
        except LeadershipLost as lost:
            logger.warning("lost the leader election; standing by again", reason=str(lost))


@asynccontextmanager
async def root(
    reporter: NodeStatusReporter, settings: Settings, elector: Elector | None
) -> AsyncIterator[trio.Nursery]:
    """The node's root nursery; if it fails after the node registered, the node says why,
    NotReady.

    Otherwise the Node would stay Ready until its Lease expired, and the scheduler would keep
    sending pods to a process that has exited. A replica that lost the leader election never
    writes the node (its new leader does); once every task has ended it raises
    ``LeadershipLost``. A leader that stops for any reason releases its Lease, after every
    task has ended.
    """
    lost = None
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
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
