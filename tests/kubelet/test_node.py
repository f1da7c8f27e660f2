"""``serve_node(kubelet_api=True)`` against both simulators: the Vast-backed kubelet API,
reached by the real kubectl through the stand-in once its serving CSR is approved."""

from __future__ import annotations

import json

import trio

from tests.e2e.e2e import NODE, gpu_pod
from tests.kubelet.conftest import ServedNode
from vk_trio.devtools.sim.kube import KubeSim


async def test_kubectl_logs_of_a_pod_on_a_rented_instance(
    nursery: trio.Nursery, kube_sim: KubeSim, served_node: ServedNode
) -> None:
    kubectl = await served_node(log_interval=0.5)
    kube_sim.create(gpu_pod("trainer", "default"))

    with trio.fail_after(30):
        while True:
            code, out, err = await kubectl("logs", "trainer")
            if code == 0 and "step 2 done" in out:
                break
            # Before the instance exists, or while the certificate is not served yet.
            assert "waiting" in err or "certificate" in err or "x509" in err or code == 0, err
            await trio.sleep(0.3)
    assert out.startswith("Pulling image nginx:1.27\n")
    assert "[" in out and "nginx:1.27: step 1 done" in out
    code, out, _ = await kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary")
    assert code == 0
    summary = json.loads(out)
    assert summary["node"]["nodeName"] == NODE
    [pod] = summary["pods"]
    [container] = pod["containers"]
    assert pod["podRef"]["name"] == "trainer"
    assert container["memory"]["workingSetBytes"] > 0 and container["cpu"]["usageNanoCores"] > 0
    [gpu] = container["accelerators"]
    assert gpu["model"] == "RTX 3090" and 40 <= gpu["dutyCycle"] <= 95
    nursery.cancel_scope.cancel()


async def test_logs_and_stats_follow_the_container_the_instance_runs(
    nursery: trio.Nursery, kube_sim: KubeSim, served_node: ServedNode
) -> None:
    """``vast.ai/container`` picks the second container: stats name it, its logs are the
    instance's, and the first container (not run) says so instead of showing them."""
    kubectl = await served_node(log_interval=0.5)
    kube_sim.create(
        gpu_pod(
            "pair",
            "default",
            annotations={"vast.ai/container": "model"},
            containers=[
                {"name": "sidecar", "image": "busybox:1.36"},
                {"name": "model", "image": "nginx:1.27"},
            ],
        )
    )
    with trio.fail_after(30):
        while True:
            code, out, err = await kubectl("logs", "pair", "-c", "model")
            if code == 0 and "step 1 done" in out:
                break
            await trio.sleep(0.3)
    assert "nginx:1.27" in out
    code, out, err = await kubectl("logs", "pair", "-c", "sidecar")
    assert code != 0 and out == ""
    assert 'container "sidecar" in pod "pair" is waiting to start' in err, err
    assert 'the instance runs "model"' in err, err
    code, out, _ = await kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary")
    assert code == 0, out
    [pod] = json.loads(out)["pods"]
    assert [c["name"] for c in pod["containers"]] == ["model"]
    nursery.cancel_scope.cancel()
