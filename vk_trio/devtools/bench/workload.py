"""What the bench creates: the market it buys from, the pods, and the names it uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vk_trio.devtools.sim.vast import VastSim

NODE = "vk-bench"
API_KEY = "vk-bench-key"
NAMESPACE = "default"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
APP_READY_AFTER = 5.0
"""With ``--probes``: seconds each simulated app answers 503 after its instance runs."""
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"

Obj = dict[str, Any]


def market_file(folder: Path, pods: int) -> Path:
    """The simulator's seeded market plus an RTX 3090 for every pod (and a few spare)."""
    offer = {
        "gpu_name": "RTX 3090",
        "num_gpus": 1,
        "dph_total": 0.4,
        "geolocation": "Texas, US",
        "reliability": 0.999,
        "reliability2": 0.999,
        "verification": "verified",
        "rentable": True,
        "rented": False,
        "disk_space": 500.0,
    }
    market = VastSim()
    market.add_offers([offer] * (pods + 10))
    path = folder / "offers.json"
    path.write_text(json.dumps(market.offers()))
    return path


def node_names(count: int) -> list[str]:
    """``vk-bench``, or ``vk-bench-0`` … for several nodes."""
    return [NODE] if count == 1 else [f"{NODE}-{i}" for i in range(count)]


AGENT_COMMAND = ["sh", "-c", "echo started; exec sleep 3600"]
"""What an agent bench pod runs: starts at once, then idles (the agent's cost is the point)."""


def bench_pod(
    name: str, node: str = NODE, *, probe_period: int | None = None, agent: bool = False
) -> Obj:
    """A one-GPU pod bound to ``node``, as a scheduler would have bound it; with
    ``probe_period``, probed on its port 8000 (liveness only after the app's start); with
    ``agent``, run under the vk-trio agent (``vast.ai/agent``), an idle shell command."""
    container: Obj = {
        "name": "app",
        "image": "nginx:1.27",
        "ports": [{"containerPort": 8000}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    if probe_period is not None:
        probe = {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": probe_period}
        container["readinessProbe"] = probe
        container["livenessProbe"] = {**probe, "initialDelaySeconds": 30, "failureThreshold": 3}
    annotations = {"vast.ai/gpu-type": "RTX 3090", "vast.ai/price-max": "2.00"}
    if agent:
        container["command"] = AGENT_COMMAND
        annotations["vast.ai/agent"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [container],
        },
    }
