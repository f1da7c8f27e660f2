"""What the real kubectl gets for what a pod cannot do: ``attach``, ``exec`` and
``port-forward`` of a pod without the vk-trio agent, and ``debug`` of any, fail at once,
saying why, instead of hanging.

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


NEEDS_AGENT = (
    "kubectl exec, attach and port-forward need the vk-trio agent inside the instance; "
    "this pod runs without it"
)


async def test_attach_exec_port_forward_and_debug_fail_at_once_saying_why(
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
    assert NEEDS_AGENT in err and 'vast.ai/agent: "true"' in err

    code, _, err = await kubectl("exec", "trainer", "--", "ls")
    assert code != 0
    assert NEEDS_AGENT in err

    code, _, err = await kubectl("port-forward", "trainer", "18089:8000")
    assert code != 0
    assert NEEDS_AGENT in err

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
