"""``vk-trio demo``: the whole product, end to end, on the built-in simulators.

One process runs the Vast.ai simulator, the Kubernetes API stand-in and the real node
(``serve_node``, the same code path as ``vk-trio run``). The demo plays the scheduler: it
applies ``deployments/examples/`` (pods of a Deployment are created already bound to the
virtual node if they tolerate its taint and select it), shows the lifecycle live (search →
match → buy → boot → Running with an address), deletes the pods like ``kubectl delete`` does,
and checks with the simulator's ledger that every instance was destroyed.

Exit status 0 means every pod ran and nothing leaked. ``--hold`` keeps everything up and
prints a kubeconfig, so ``kubectl get pods -o wide`` can be tried against it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
import yaml

from vk_trio.app import serve_node
from vk_trio.config import Settings
from vk_trio.logs import configure_logging
from vk_trio.sim.kube import KubeSim
from vk_trio.sim.vast import VastSim, VastSimConfig

NODE = "vast-gpu-node-python"
TAINT_KEY = "virtual-kubelet.io/provider"
NODE_LABELS = {"type": "virtual-kubelet", "kubernetes.io/hostname": NODE}
EXAMPLES = Path(__file__).resolve().parents[1] / "deployments" / "examples"

Obj = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="manifests to apply")
    parser.add_argument("--seed", type=int, default=7, help="marketplace seed")
    parser.add_argument("--boot-seconds", type=float, default=6.0, help="simulated boot time")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after (seconds)")
    parser.add_argument("--hold", action="store_true", help="keep running; print a kubeconfig")
    parser.add_argument("--log-level", default="INFO")


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=False)
    manifests = _load(args.examples)  # read before the loop starts: no file I/O inside it
    try:
        return trio.run(_demo, args, manifests)
    except trio.TooSlowError:
        _say(f"\nFAILED: the demo did not finish within {args.timeout:.0f}s")
        return 1


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _demo(args: argparse.Namespace, manifests: list[Obj]) -> int:
    vast = VastSim(VastSimConfig(seed=args.seed, boot_seconds=args.boot_seconds))
    kube = KubeSim()
    workdir = Path(tempfile.mkdtemp(prefix="vk-trio-demo-"))
    kubeconfig = workdir / "kubeconfig"
    async with trio.open_nursery() as simulators:
        vast_url = await simulators.start(vast.serve)
        await simulators.start(kube.serve)
        kube.write_kubeconfig(kubeconfig)
        settings = Settings(
            node_name=NODE,
            vast_api_key="demo-key",
            vast_api_url=vast_url,
            kubeconfig=str(kubeconfig),
            health_host="127.0.0.1",
            health_port=0,
            poll_fast=1.0,
            poll_slow=5.0,
        )
        # The node stops first, while the simulators still answer its goodbye.
        async with trio.open_nursery() as node:
            runtime = await node.start(serve_node, settings)
            _say(f"\n== vk-trio demo: node {NODE}, Vast simulator {vast_url}")
            _say(f"   health probes at {runtime.health_url}/healthz and /readyz")
            with trio.fail_after(args.timeout):
                code = await _scenario(args, manifests, vast, kube)
            if args.hold and code == 0:
                _say(f"\nHolding. Try:  KUBECONFIG={kubeconfig} kubectl get nodes,pods -A -o wide")
                _say("Ctrl-C to stop.")
                await trio.sleep_forever()
            node.cancel_scope.cancel()
        simulators.cancel_scope.cancel()
    return code


async def _scenario(
    args: argparse.Namespace, manifests: list[Obj], vast: VastSim, kube: KubeSim
) -> int:
    await kube.wait_until(lambda s: _node_ready(s.get("nodes", None, NODE)))
    _say(f"== node {NODE} is Ready; applying {args.examples}")
    started = trio.current_time()
    pods = [kube.create(pod) for pod in _apply(kube, manifests)]
    if not pods:
        _say("no pods in the examples tolerate and select the virtual node")
        return 1
    keys = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods]
    for namespace, name in keys:
        _say(f"   pod {namespace}/{name} created and bound to {NODE}")

    running_at: dict[tuple[str, str], float] = {}
    while len(running_at) < len(keys):
        await kube.wait_until(lambda s: _newly_running(s, keys, running_at))
        for key in keys:
            if key not in running_at and _phase(kube.get("pods", *key)) == "Running":
                running_at[key] = trio.current_time() - started
    _say("\n== every pod is Running")
    _table(kube, keys)

    if args.hold:
        return 0
    _say("\n== deleting the pods (as kubectl delete does: graceful, 30 s)")
    for namespace, name in keys:
        kube.delete("pods", namespace, name, grace_seconds=30)
    await kube.wait_until(lambda s: all(s.get("pods", *key) is None for key in keys))
    await vast.wait_until(lambda s: not s.live_instances())
    _say("   every pod object is gone; every instance destroyed")
    return _summary(vast, running_at)


def _load(folder: Path) -> list[Obj]:
    """Every YAML document in ``folder``, in file order."""
    return [
        doc
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _apply(kube: KubeSim, manifests: list[Obj]) -> Iterator[Obj]:
    """Create namespaces; yield the pods the manifests ask for, bound to the node when they
    tolerate its taint and select it (the scheduler's job, played here)."""
    for doc in manifests:
        kind = doc.get("kind")
        if kind == "Namespace":
            if kube.get("namespaces", None, doc["metadata"]["name"]) is None:
                kube.create(doc)
        elif kind == "Pod":
            yield from _bind([doc])
        elif kind in ("Deployment", "StatefulSet", "ReplicaSet", "Job"):
            yield from _bind(_replicas(doc))


def _replicas(workload: Obj) -> list[Obj]:
    meta = workload["metadata"]
    template = workload["spec"]["template"]
    count = int(workload["spec"].get("replicas", 1))
    pods = []
    for _ in range(count):
        pod_meta = dict(template.get("metadata") or {})
        pod_meta["name"] = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        pod_meta["namespace"] = meta.get("namespace", "default")
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": pod_meta,
                "spec": dict(template["spec"]),
            }
        )
    return pods


def _bind(pods: list[Obj]) -> Iterator[Obj]:
    for pod in pods:
        spec = pod["spec"]
        tolerates = any(t.get("key") == TAINT_KEY for t in spec.get("tolerations") or [])
        selected = all(NODE_LABELS.get(k) == v for k, v in (spec.get("nodeSelector") or {}).items())
        if tolerates and selected:
            spec["nodeName"] = NODE
            yield pod


def _node_ready(node: Obj | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _phase(pod: Obj | None) -> str:
    return str(((pod or {}).get("status") or {}).get("phase", ""))


def _newly_running(
    kube: KubeSim, keys: list[tuple[str, str]], seen: dict[tuple[str, str], float]
) -> bool:
    return any(k not in seen and _phase(kube.get("pods", *k)) == "Running" for k in keys)


def _table(kube: KubeSim, keys: list[tuple[str, str]]) -> None:
    _say(f"   {'POD':<40} {'IP':<16} {'GPU':<16} {'$/h':>7}  ENDPOINTS")
    for key in keys:
        pod = kube.get("pods", *key) or {}
        notes = pod.get("metadata", {}).get("annotations", {})
        address = pod.get("status", {}).get("podIP", "")
        price = float(notes.get("vast.ai/price-per-hour", 0))
        _say(
            f"   {'/'.join(key):<40} {address:<16} {notes.get('vast.ai/gpu', ''):<16}"
            f" {price:>7.3f}  {notes.get('vast.ai/endpoints', '')}"
        )


def _summary(vast: VastSim, running_at: dict[tuple[str, str], float]) -> int:
    ledger = vast.ledger()
    leaked = [entry for entry in ledger if entry["destroyed_at"] is None]
    calls = vast.stats()
    times = sorted(running_at.values())
    _say("\n== summary")
    _say(f"   pods run:               {len(running_at)}")
    _say(
        f"   time to Running:        min {times[0]:.1f}s, median {statistics.median(times):.1f}s,"
        f" max {times[-1]:.1f}s (simulated boot included)"
    )
    _say(
        f"   instances bought:       {len(ledger)} at ${sum(e['dph_total'] for e in ledger):.3f}/h"
    )
    _say(f"   demo cost:              ${sum(e['cost'] for e in ledger):.5f}")
    _say(f"   Vast API calls:         {sum(calls.values())} " + _calls(calls))
    _say(f"   instances leaked:       {len(leaked)}")
    return 0 if not leaked else 1


def _calls(stats: dict[str, int]) -> str:
    parts = [f"{name} {count}" for name, count in sorted(stats.items()) if count]
    return "(" + ", ".join(parts) + ")"
