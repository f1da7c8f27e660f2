"""``vk-trio demo``: the whole product, end to end, on the built-in simulators.

One process runs the Vast.ai simulator, the Kubernetes API stand-in and the real node
(``serve_node``, the same code path as ``vk-trio run``). The demo applies
``deployments/examples/`` as they are, as ``kubectl apply`` would (each object checked against
its schema first): the stand-in's scheduler binds the pods that select and tolerate the virtual
node, its Deployment controller runs the Deployments through ReplicaSets. The demo shows the
lifecycle live (search → match → buy → boot → Running with an address), deletes what it
applied as a user would (the Deployments, whose pods the garbage collector deletes, and the bare
pods, gracefully), and checks with the simulator's ledger that every instance was destroyed.

When the simulator's sandbox works here (util-linux ``unshare`` and user namespaces: probed
first), each instance runs its process for real (``run_containers``) and the node has the
simulator's ``--agent-url``: the pods in ``deployments/examples/agent/`` run under the vk-trio
agent, and the demo prints the start of a ConfigMap reader's log, read through the node. The
examples' images, which cannot run here, get stand-ins (``standins.py``: a small root with a
stand-in ``nvidia-smi``, and servers answering on the pods' ports). Without the sandbox it
says in one line what is missing, runs the rest as before (instances run no process) and skips
the pods that need the agent.

Exit status: 0 means every pod ran and nothing leaked; 1 that something failed or leaked; 130
that Ctrl-C stopped it before it could check (that is not "everything ran"). ``--hold`` keeps
everything up and prints a kubeconfig, so ``kubectl`` can be tried against it; there Ctrl-C
is the way to stop, and the exit status is the run's (0 if everything ran and nothing leaked).
Either way Ctrl-C first deletes what the demo applied and waits (bounded) for the node to
destroy the instances, and the demo's temporary folder is removed.
"""

from __future__ import annotations

import argparse
import functools
import signal
import socket
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
import yaml

from vk_trio.app import NodeRuntime, serve_node
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.kube import openapi as kube_openapi
from vk_trio.devtools.sim.kube.kinds import RESOURCES
from vk_trio.devtools.sim.kube.store import ApiError
from vk_trio.devtools.sim.vast import VastSim, VastSimConfig
from vk_trio.devtools.sim.vast.sandbox import probe
from vk_trio.devtools.standins import SimImageConfigs, make_standins
from vk_trio.kube.models import Pod
from vk_trio.logs import configure_logging
from vk_trio.node.provider import ContainerError, LogOptions

NODE = "vast-gpu-node-python"
EXAMPLES = Path(__file__).resolve().parents[2] / "deployments" / "examples"
AGENT_EXAMPLES = "agent"
"""The examples' subfolder of pods that need the vk-trio agent (a node with --agent-url)."""
CLEANUP_SECONDS = 60.0
"""How long Ctrl-C (or a failed run) waits for the node to destroy the instances."""
LOG_WAIT = 20.0
"""How long the demo waits for a ConfigMap reader's first log line."""
LOG_LINES = 3

Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--examples",
        type=Path,
        default=EXAMPLES,
        help="folder of manifests to apply (default: the bundled deployments/examples)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="simulated marketplace seed (default %(default)s)"
    )
    parser.add_argument(
        "--boot-seconds",
        type=float,
        default=6.0,
        help="simulated instance boot time (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="give up when the pods are not all Running after this many seconds "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="keep running once every pod is Running and print a kubeconfig; Ctrl-C stops",
    )
    parser.add_argument("--log-level", default="INFO", help="node log level (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=False)
    manifests = _load(args.examples)  # read before the loop starts: no file I/O inside it
    with tempfile.TemporaryDirectory(prefix="vk-trio-demo-") as workdir:
        try:
            kubelet_port = _free_port()
            return trio.run(_demo, args, manifests, Path(workdir) / "kubeconfig", kubelet_port)
        except BaseException as error:
            # Ctrl-C before the demo's own handling is in place (while starting up) arrives
            # as KeyboardInterrupt, maybe wrapped in the nurseries' exception groups.
            if not _only_interrupts(error):
                raise
            _say("\nInterrupted while starting; nothing was applied.")
            return 130


def _free_port() -> int:
    """A free loopback port for the node's kubelet API (never 0.0.0.0:10250 on a laptop)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _only_interrupts(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in error.exceptions)
    return isinstance(error, KeyboardInterrupt)


def _say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    """One run: the simulators, what was applied, and when each pod got Running."""

    def __init__(self, args: argparse.Namespace, vast: VastSim, kube: KubeSim) -> None:
        self.args, self.vast, self.kube = args, vast, kube
        self.runtime: NodeRuntime | None = None
        """The node, once started (its provider reads the pods' logs)."""
        self.pods: list[Key] = []
        """Bare pods applied."""
        self.readers: list[tuple[Key, str]] = []
        """Bare pods with a ConfigMap volume, and their container: their logs are shown."""
        self.deployments: list[Key] = []
        self.running_at: dict[Key, float] = {}
        """Every pod on the node that got Running, and when (seconds after applying)."""
        self.held = False
        """Whether the run passed and ``--hold`` was holding when stopped."""

    async def scenario(self, manifests: list[Obj]) -> int:
        """Apply, wait for everything to run, and (without ``--hold``) delete and check."""
        kube = self.kube
        await kube.wait_until(lambda s: _node_ready(s.get("nodes", None, NODE)))
        shown = "deployments/examples/" if self.args.examples == EXAMPLES else self.args.examples
        _say(f"== node {NODE} is Ready; applying {shown}")
        try:
            self._apply(manifests)
        except ApiError as error:
            _say(f"FAILED: {error.message}")
            return 1
        if not self.pods and not self.deployments:
            _say("no Pods or Deployments in the examples")
            return 1
        started = trio.current_time()

        def progress() -> bool:
            """Note the pods that got Running (so times are exact), then: is everything up?"""
            for pod in kube.list("pods"):
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                on_node = pod["spec"].get("nodeName") == NODE
                if on_node and _phase(pod) == "Running" and key not in self.running_at:
                    self.running_at[key] = trio.current_time() - started
            return self._all_up()

        with trio.move_on_after(self.args.timeout) as waiting:
            await kube.wait_until(progress)
        if waiting.cancelled_caught:
            _say(f"\nFAILED: not everything was Running within {self.args.timeout:.0f}s")
            return 1
        _say("\n== every pod is Running")
        self._table()
        await self._show_readers()
        if self.args.hold:
            return 0
        _say("\n== deleting what was applied (as kubectl delete does: graceful, 30 s)")
        await self.delete_all()
        _say("   every pod object is gone; every instance destroyed")
        return self._summary()

    def _apply(self, manifests: list[Obj]) -> None:
        """Create every object, as ``kubectl apply`` would on a fresh cluster: checked against
        its schema (a wrong field raises ``ApiError``, as kubectl would fail), namespaces that
        exist left alone, kinds the stand-in does not serve skipped with a line saying so."""
        for doc in manifests:
            resource = next((r for r in RESOURCES if r.kind == doc.get("kind")), None)
            if resource is None:
                _say(
                    f"   {doc.get('kind')} {doc.get('metadata', {}).get('name')}: skipped,"
                    " a kind the stand-in does not serve"
                )
                continue
            kube_openapi.decode(resource, doc, "Strict")
            meta = doc["metadata"]
            if resource.kind == "Pod" and _needs_agent(doc) and not self.vast.runs_containers:
                _say(
                    f"   pod {meta.get('namespace', 'default')}/{meta['name']}: skipped, it needs"
                    " the vk-trio agent, which needs the sandbox"
                )
                continue
            if resource.kind == "Namespace" and self.kube.get("namespaces", None, meta["name"]):
                continue
            created = self.kube.create(doc)
            key = (created["metadata"].get("namespace", ""), meta["name"])
            details = ""
            if resource.kind == "Pod":
                self.pods.append(key)
                if _config_map_volumes(doc):
                    self.readers.append((key, doc["spec"]["containers"][0]["name"]))
            elif resource.kind == "Deployment":
                self.deployments.append(key)
                spec = created["spec"]
                details = f" (replicas {spec['replicas']}, {spec['strategy']['type']})"
            _say(f"   {resource.kind.lower()} {'/'.join(k for k in key if k)} created{details}")

    def _all_up(self) -> bool:
        pods_up = all(_phase(self.kube.get("pods", *key)) == "Running" for key in self.pods)
        return pods_up and all(
            _rolled_out(self.kube.get("deployments", *key)) for key in self.deployments
        )

    def _table(self) -> None:
        _say(f"   {'DEPLOYMENT':<52} READY")
        for key in self.deployments:
            deployment = self.kube.get("deployments", *key) or {}
            ready = (deployment.get("status") or {}).get("readyReplicas", 0)
            _say(f"   {'/'.join(key):<52} {ready}/{deployment['spec']['replicas']}")
        _say(f"   {'POD':<52} {'IP':<16} {'GPU':<16} {'$/h':>7}  ENDPOINTS")
        for key in sorted(self.running_at):
            pod = self.kube.get("pods", *key) or {}
            notes = pod.get("metadata", {}).get("annotations", {})
            address = pod.get("status", {}).get("podIP", "")
            price = float(notes.get("vast.ai/price-per-hour", 0))
            _say(
                f"   {'/'.join(key):<52} {address:<16} {notes.get('vast.ai/gpu', ''):<16}"
                f" {price:>7.3f}  {notes.get('vast.ai/endpoints', '')}"
            )

    async def _show_readers(self) -> None:
        """The first lines each ConfigMap reader logged, read through the node's provider
        (what ``kubectl logs`` gets): the file the agent wrote from the ConfigMap."""
        for key, container in self.readers:
            lines = await self._first_lines(key, container)
            shown = lines[0] if lines else "(nothing logged yet)"
            _say(f"\n== {'/'.join(key)} read its ConfigMap: {shown}")
            for line in lines[1:LOG_LINES]:
                _say(f"   {line}")

    async def _first_lines(self, key: Key, container: str) -> list[str]:
        """The pod's log lines once it has some (bounded wait: the process starts just after
        the pod shows Running)."""
        assert self.runtime is not None
        with trio.move_on_after(LOG_WAIT):
            while True:
                pod = msgspec.convert(self.kube.get("pods", *key), Pod)
                try:
                    stream = await self.runtime.provider.logs(pod, container, LogOptions())
                    text = b"".join([chunk async for chunk in stream]).decode(errors="replace")
                except ContainerError:
                    text = ""
                if text.strip():
                    return text.splitlines()
                await trio.sleep(0.2)
        return []

    async def delete_all(self) -> None:
        """Delete what was applied, as a user would, and wait until no pod is left on the node
        and no instance is live. Deployments go at once (their ReplicaSets and pods follow
        through the garbage collector); pods are deleted gracefully, so the node destroys
        their instances before the objects disappear."""
        for namespace, name in self.deployments:
            if self.kube.get("deployments", namespace, name) is not None:
                self.kube.delete("deployments", namespace, name)
        for namespace, name in self.pods:
            if self.kube.get("pods", namespace, name) is not None:
                self.kube.delete("pods", namespace, name, grace_seconds=30)
        await self.kube.wait_until(
            lambda s: (
                not s.list("replicasets")
                and not any(p["spec"].get("nodeName") == NODE for p in s.list("pods"))
            )
        )
        await self.vast.wait_until(lambda s: not s.live_instances())

    def leaked(self) -> int:
        return sum(1 for entry in self.vast.ledger() if entry["destroyed_at"] is None)

    def _summary(self) -> int:
        ledger = self.vast.ledger()
        calls = self.vast.stats()
        times = sorted(self.running_at.values())
        _say("\n== summary")
        _say(f"   pods run:               {len(self.running_at)}")
        _say(
            f"   time to Running:        min {times[0]:.1f}s, median"
            f" {statistics.median(times):.1f}s, max {times[-1]:.1f}s (simulated boot included)"
        )
        total = sum(e["dph_total"] for e in ledger)
        _say(f"   instances bought:       {len(ledger)} at ${total:.3f}/h")
        _say(f"   demo cost:              ${sum(e['cost'] for e in ledger):.5f}")
        _say(f"   Vast API calls:         {sum(calls.values())} " + _calls(calls))
        _say(f"   instances leaked:       {self.leaked()}")
        return 0 if not self.leaked() else 1


async def _demo(
    args: argparse.Namespace, manifests: list[Obj], kubeconfig: Path, kubelet_port: int
) -> int:
    sandbox_problem = await probe()
    config = VastSimConfig(seed=args.seed, boot_seconds=args.boot_seconds)
    if sandbox_problem is None:
        roots, configs = await trio.to_thread.run_sync(make_standins, kubeconfig.parent / "images")
        config = msgspec.structs.replace(
            config, run_containers=True, image_roots=roots, image_configs=configs
        )
    vast = VastSim(config)
    # Instances that run their process answer at 127.0.0.1, which a real API server refuses
    # in an EndpointSlice: the stand-in accepts it then, so the example's Service is routed.
    kube = KubeSim(allow_loopback_endpoints=sandbox_problem is None)
    demo = Demo(args, vast, kube)
    async with trio.open_nursery() as simulators:
        vast_url = await simulators.start(vast.serve)
        await simulators.start(kube.serve)
        await trio.to_thread.run_sync(kube.write_kubeconfig, kubeconfig)
        # The stand-in serves plain http, so the kubeconfig carries no CA the node would
        # keep: hand it the cluster CA that signs the stand-in's kubelet-client certificate.
        client_ca = kubeconfig.with_name("cluster-ca.crt")
        await trio.to_thread.run_sync(client_ca.write_bytes, kube.node_api.ca.cert_pem)
        settings = Settings(
            node_name=NODE,
            vast_api_key="demo-key",
            vast_api_url=vast_url,
            kubeconfig=str(kubeconfig),
            health_host="127.0.0.1",
            health_port=0,
            kubelet_host="127.0.0.1",
            kubelet_port=kubelet_port,
            client_ca_file=str(client_ca),
            poll_fast=1.0,
            poll_slow=5.0,
            agent_url=vast.agent_url if vast.runs_containers else None,
        )
        images = SimImageConfigs(vast.image_configs())
        # The node stops first, while the simulators still answer its goodbye.
        async with trio.open_nursery() as node:
            node.start_soon(_approve_serving_certificate, kube)
            runtime = await node.start(
                functools.partial(serve_node, settings, kubelet_api=True, images=images)
            )
            demo.runtime = runtime
            _say(f"\n== vk-trio demo: node {NODE}, Vast simulator {vast_url}")
            _say(f"   health probes at {runtime.health_url}/healthz and /readyz")
            _say_sandbox(vast, sandbox_problem)
            code = await _stoppable(lambda: _run(demo, manifests, kubeconfig))
            if code is None:
                code = await _stop(demo, "\n== Ctrl-C: deleting what the demo applied")
            elif code != 0:
                await _stop(demo, "\n== cleaning up: deleting what the demo applied")
            node.cancel_scope.cancel()
        simulators.cancel_scope.cancel()
    return code


async def _approve_serving_certificate(kube: KubeSim) -> None:
    """Play the cluster admin once: approve the node's kubelet-serving CSR, as
    ``kubectl certificate approve`` would, so ``kubectl logs`` works in ``--hold``."""

    def pending(sim: KubeSim) -> list[Obj]:
        return [c for c in sim.list("certificatesigningrequests") if not c.get("status")]

    await kube.wait_until(lambda sim: bool(pending(sim)))
    for csr in pending(kube):
        kube.node_api.decide(csr["metadata"]["name"], approve=True)


async def _run(demo: Demo, manifests: list[Obj], kubeconfig: Path) -> int:
    """The scenario, then, with ``--hold`` and once it passed, wait for Ctrl-C (which cancels
    this; ``_demo`` then cleans up and exits with the run's status)."""
    code = await demo.scenario(manifests)
    if demo.args.hold and code == 0:
        demo.held = True
        _say(f"\nHolding. Try:  export KUBECONFIG={kubeconfig}")
        _say("   kubectl get nodes,deploy,pods -A -o wide")
        _say("   kubectl logs -n june-services deploy/june-gpu-services  (the node's kubelet API)")
        _say(f"   kubectl apply -f {EXAMPLES / 'pod-minimal.yaml'}")
        _say("Ctrl-C to stop (deletes what runs, then exits).")
        await trio.sleep_forever()
    return code


async def _stoppable(run: Callable[[], Awaitable[int]]) -> int | None:
    """``run()``'s result, or None when Ctrl-C stopped it first."""
    result: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:

            async def run_then_stop() -> None:
                result.append(await run())
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_stop)
            async for _ in interrupts:
                nursery.cancel_scope.cancel()
                break
    return result[0] if result else None


async def _stop(demo: Demo, headline: str) -> int:
    """Delete what was applied and wait (bounded; a second Ctrl-C gives up) for the node to
    destroy the instances. Returns the exit status for a stopped run: 0 after a ``--hold``
    whose run passed and leaked nothing, else 130."""
    _say(headline)
    cleanup = await _stoppable(_timed(demo.delete_all, CLEANUP_SECONDS))
    leaked = demo.leaked()
    if cleanup is None:
        _say(f"   stopped again: not waiting; {leaked} instance(s) still live")
    elif cleanup != 0:
        _say(f"   gave up after {CLEANUP_SECONDS:.0f}s; {leaked} instance(s) still live")
    else:
        _say(f"   done: instances leaked: {leaked}")
    return 0 if demo.held and cleanup == 0 and not leaked else 130


def _say_sandbox(vast: VastSim, problem: str | None) -> None:
    """One line: whether instances run their process (and the agent), or what is missing."""
    if vast.runs_containers:
        _say(f"   instances run their process in a sandbox; agent at {vast.agent_url}")
    else:
        _say(f"   no sandbox here, instances run no process: {problem}")


def _timed(action: Callable[[], Awaitable[None]], seconds: float) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        with trio.move_on_after(seconds):
            await action()
            return 0
        return 1

    return run


def _load(folder: Path) -> list[Obj]:
    """Every YAML document in ``folder``, then in its ``agent/`` subfolder, in file order."""
    paths = [*sorted(folder.glob("*.yaml")), *sorted((folder / AGENT_EXAMPLES).glob("*.yaml"))]
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _config_map_volumes(pod: Obj) -> list[Obj]:
    return [v for v in pod["spec"].get("volumes") or [] if "configMap" in v]


def _needs_agent(pod: Obj) -> bool:
    """What makes the node run a pod under the agent (``provider.runtime.agent_placement``),
    as far as the examples go: volumes, init containers, or the annotation."""
    spec, notes = pod["spec"], pod["metadata"].get("annotations") or {}
    wanted = str(notes.get("vast.ai/agent", "")).strip().lower() == "true"
    return wanted or bool(spec.get("volumes") or spec.get("initContainers"))


def _rolled_out(deployment: Obj | None) -> bool:
    """What ``kubectl rollout status`` waits for."""
    if deployment is None:
        return False
    status, replicas = deployment.get("status") or {}, deployment["spec"]["replicas"]
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
    )


def _node_ready(node: Obj | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _phase(pod: Obj | None) -> str:
    return str(((pod or {}).get("status") or {}).get("phase", ""))


def _calls(stats: dict[str, int]) -> str:
    parts = [f"{name} {count}" for name, count in sorted(stats.items()) if count]
    return "(" + ", ".join(parts) + ")"
