"""The node's end of the link, without an agent: what it makes of the agent's numbers."""

from __future__ import annotations

import trio

from vk_trio.agent.link import node_keys, pod_secret
from vk_trio.provider.agent_link import AgentLink


async def test_cpu_is_a_rate_from_two_cumulative_readings(autojump_clock: trio.abc.Clock) -> None:
    link = AgentLink(node_keys(pod_secret(b"master", "uid-1")), "127.0.0.1", 1)
    assert link._cpu_rate(4_000_000_000) is None  # one sample says nothing of a rate
    await trio.sleep(2.0)
    assert link._cpu_rate(5_000_000_000) == 500_000_000  # 1 s of CPU in 2 s: half a core
    assert link._cpu_rate(None) is None  # the cgroup could not be read: no figure
    await trio.sleep(1.0)
    assert link._cpu_rate(6_000_000_000) is None  # and the next starts afresh
