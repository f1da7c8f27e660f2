"""What the real kubectl gets for what Vast.ai instances cannot do yet: ``attach``, ``exec``
and ``debug`` fail at once, saying so, instead of hanging.

Full stack: ``serve_node(kubelet_api=True)`` against both simulators, kubectl through the
stand-in, which proxies ``pods/{name}/{exec,attach}`` to the node and serves the
``ephemeralcontainers`` subresource as a real API server does. Each kubectl call has a
deadline, so a hang fails the test.
"""

from __future__ import annotations

import functools

import trio

from tests.e2e.e2e import gpu_pod
from tests.kubelet.conftest import ServedNode
from vk_trio.devtools.sim.kube import KubeSim

AT_ONCE = 20.0
"""Seconds a refusal may take on a loaded machine; a hang is forever."""


async def test_attach_exec_and_debug_fail_at_once_saying_why(
    nursery: trio.Nursery, kube_sim: KubeSim, served_node: ServedNode
) -> None:
    kubectl = functools.partial(await served_node(), within=AT_ONCE)
    kube_sim.create(gpu_pod("trainer", "default"))

    with trio.fail_after(30):  # running, and its kubelet API served (logs answer)
        while True:
            if (await kubectl("logs", "trainer"))[0] == 0:
                break
            await trio.sleep(0.3)

    code, _, err = await kubectl("attach", "trainer", "-i")
    assert code != 0
    assert "kubectl attach is not supported on Vast.ai instances (yet)" in err

    code, _, err = await kubectl("exec", "trainer", "--", "ls")
    assert code != 0
    assert "kubectl exec is not supported on Vast.ai instances (yet)" in err

    code, out, err = await kubectl("debug", "trainer", "--image=busybox", "-it", "-c", "dbg")
    assert code != 0, out
    assert "kubectl debug is not supported on Vast.ai instances (yet)" in err, err
    pod = kube_sim.get("pods", "default", "trainer")
    assert pod is not None
    [status] = pod["status"]["ephemeralContainerStatuses"]
    assert status["name"] == "dbg"
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 128
    assert terminated["reason"] == "NotSupportedOnVirtualNode"
    assert "kubectl debug is not supported" in terminated["message"]
    # The pod itself runs on, untouched.
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    nursery.cancel_scope.cancel()
