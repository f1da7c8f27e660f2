"""What the real kubectl gets for what Vast.ai instances cannot do yet: ``attach``, ``exec``
and ``debug`` fail at once, saying so, instead of hanging.

Full stack: ``serve_node(kubelet_api=True)`` against both simulators, kubectl through the
stand-in, which proxies ``pods/{name}/{exec,attach}`` to the node and serves the
``ephemeralcontainers`` subresource as a real API server does. Each kubectl call has a
deadline, so a hang fails the test.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import trio

from tests.e2e.e2e import gpu_pod, settings_for
from tests.kubelet.test_certs import pending_csr
from tests.kubelet.test_node import free_port
from tests.plugins.kube_sim import KUBECTL
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.app import serve_node
from vk_trio.devtools.sim.kube import KubeSim

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

AT_ONCE = 20.0
"""Seconds a refusal may take on a loaded machine; a hang is forever."""


async def test_attach_exec_and_debug_fail_at_once_saying_why(
    nursery: trio.Nursery,
    kube_sim: KubeSim,
    kubeconfig: Path,
    vast_sim_factory: VastSimFactory,
    tmp_path: Path,
) -> None:
    vast = await vast_sim_factory()
    client_ca = tmp_path / "ca.crt"
    client_ca.write_bytes(kube_sim.node_api.ca.cert_pem)
    settings = settings_for(
        vast.url,
        kubeconfig,
        kubelet_host="127.0.0.1",
        kubelet_port=free_port(),
        client_ca_file=str(client_ca),
    )
    await nursery.start(functools.partial(serve_node, settings, kubelet_api=True))
    csr = await pending_csr(kube_sim)
    kube_sim.node_api.decide(csr["metadata"]["name"], approve=True)
    kube_sim.create(gpu_pod("trainer", "default"))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    async def kubectl(*args: str) -> tuple[int, str, str]:
        with trio.fail_after(AT_ONCE):
            result = await trio.run_process(
                [str(KUBECTL), *args],
                env=env,
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        return result.returncode, result.stdout.decode(), result.stderr.decode()

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
