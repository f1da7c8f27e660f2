"""``InstanceWatch`` on outbid interruptible instances, pure (loop time passed in): stopped
while meant to run is outbid only for a bid; ``Interrupted`` since the stop, for the pod's
grace; then ``Lost`` or (``replace``) ``Preempted``; a resume starts the clock anew."""

from __future__ import annotations

import datetime as dt

import pytest

from vk_trio.node.provider import Booting, Interrupted, Lost, Preempted, Running
from vk_trio.provider.observing import InstanceWatch, outbid
from vk_trio.provider.requirements import OutbidPolicy
from vk_trio.vast import Instance


def instance(status: str, *, bid: bool = True, intended: str = "running") -> Instance:
    return Instance(
        id=7,
        actual_status=status,
        intended_status=intended,
        is_bid=bid,
        dph_total=0.4,
        storage_total_cost=0.01,
        public_ipaddr="203.0.113.7",
    )


def watch(policy: OutbidPolicy = "wait") -> InstanceWatch:
    return InstanceWatch(
        7,
        now=0.0,
        startup=900.0,
        visibility_grace=60.0,
        offline_grace=300.0,
        price_max=None,
        ran=True,
        on_outbid=policy,
        outbid_grace=600.0,
    )


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (instance("stopped"), True),
        (instance("stopped", bid=False), False),  # on demand: stopped is not outbid
        (instance("stopped", intended="stopped"), False),  # we stopped it
        (instance("running"), False),
        (instance("offline"), False),
    ],
    ids=["outbid", "on-demand", "stopped-by-us", "running", "offline"],
)
def test_outbid_is_a_bid_stopped_while_meant_to_run(shown: Instance, expected: bool) -> None:
    assert outbid(shown) is expected
    assert shown.billing == (0.4 if shown.actual_status == "running" else 0.01)


@pytest.mark.parametrize(
    ("policy", "given_up"),
    [("wait", Lost), ("rebid", Lost), ("replace", Preempted)],
)
def test_interrupted_for_the_grace_then_given_up(
    policy: OutbidPolicy, given_up: type[Lost | Preempted]
) -> None:
    followed = watch(policy)
    assert isinstance(followed.observe(instance("running"), 10.0), Running)
    first = followed.observe(instance("stopped"), 100.0)
    assert isinstance(first, Interrupted)
    assert first.reason == "VastOutbid"
    assert "$0.0100/h" in first.message  # what it still bills
    assert followed.observe(instance("stopped"), 650.0) == first  # the same: said once
    assert followed.wake_in(650.0, 30.0) == 30.0
    assert followed.wake_in(690.0, 30.0) == 10.0  # wakes at the end of the grace
    ended = followed.observe(instance("stopped"), 700.0)
    assert isinstance(ended, given_up)
    assert ended.reason == "Outbid"


def test_a_resume_starts_the_grace_anew_and_outbid_is_never_host_offline() -> None:
    followed = watch()
    followed.observe(instance("stopped"), 0.0)
    assert isinstance(followed.observe(instance("loading"), 500.0), Booting)  # resumed
    again = followed.observe(instance("stopped"), 550.0)
    assert isinstance(again, Interrupted)
    assert isinstance(followed.observe(instance("stopped"), 1100.0), Interrupted)
    assert isinstance(followed.observe(instance("stopped", bid=False), 1100.0), Booting)


def test_the_grace_counts_from_when_an_earlier_process_saw_the_outbid() -> None:
    followed = watch()
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=500)
    at = then.strftime("%Y-%m-%dT%H:%M:%SZ")
    followed.outbid_earlier(at, now=1000.0)
    first = followed.observe(instance("stopped"), 1000.0)
    assert isinstance(first, Interrupted) and first.since == at
    assert isinstance(followed.observe(instance("stopped"), 1102.0), Lost)  # 500 + 102 > 600
    unreadable = watch()
    unreadable.outbid_earlier("yesterday", now=0.0)
    assert unreadable.outbid_since is None
