"""The Node object: registering it and keeping its status (conditions, capacity) current.

Registration (virtual-kubelet ``ensureNode``): GET the node; if it is missing, POST the whole
Node, status included; if it exists (a restart), keep its uid and re-assert our labels (a merge
patch on ``metadata.labels``: other writers' labels stay) and our taint (added only if absent),
then patch the status.

Status writes are strategic-merge patches on ``nodes/<n>/status`` holding only what we own:
conditions merge by ``type`` and addresses by ``type``, so conditions written by others (a CNI's
``NetworkUnavailable``, node-problem-detector) survive. Every condition carries
``lastHeartbeatTime=now``; ``lastTransitionTime`` only moves when a condition's status changes,
which ``NodeStatusReporter`` remembers between patches. The pressure conditions are always
False: True would make the control plane taint the node.

If the node was deleted under us (a status patch 404s) it is registered again with a new uid;
pass ``node_uid=lambda: reporter.uid`` to ``run_lease`` so the Lease follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.errors import PermanentError
from vk_trio.kube.api import KubeClient, format_time, utcnow
from vk_trio.kube.errors import KubeConflict, KubeError, KubeNotFound
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.kube.version import DEFAULT_KUBELET_VERSION

__all__ = [
    "NodeConfig",
    "NodeStatusReporter",
    "Taint",
    "run_node_status",
]

SMP = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"

HEALTH_CHECK_INTERVAL = 5.0
"""Seconds between ``health()`` checks in ``run_node_status``: a change is reported this fast."""


class Taint(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: str = ""
    effect: str = "NoSchedule"


def _default_capacity() -> dict[str, str]:
    # What the node may be asked to hold at once; the scheduler reads allocatable (= this).
    return {"cpu": "256", "memory": "2Ti", "pods": "100", "nvidia.com/gpu": "64"}


def _default_taints() -> list[Taint]:
    return [Taint(key="virtual-kubelet.io/provider", value="vast", effect="NoSchedule")]


class NodeConfig(msgspec.Struct, kw_only=True):
    """What the Node says about us. ``labels`` are added to (and override) the defaults."""

    name: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    taints: list[Taint] = msgspec.field(default_factory=_default_taints)
    """Pods must tolerate these to be scheduled here (VK's provider taint by default)."""
    capacity: dict[str, str] = msgspec.field(default_factory=_default_capacity)
    """Quantities as strings; extended resources (``nvidia.com/gpu``) must be integers."""
    internal_ip: str = ""
    """An address the apiserver can reach our kubelet port on (logs/exec); omitted if empty."""
    publish_hostname: bool = False
    """Also publish a ``Hostname`` address. Off by default: the apiserver prefers Hostname
    over InternalIP, and a node name that does not resolve breaks ``kubectl logs``."""
    kubelet_port: int = 10250
    kubelet_version: str = DEFAULT_KUBELET_VERSION
    os: str = "linux"
    arch: str = "amd64"
    declared_features: list[str] = msgspec.field(default_factory=list)
    """``status.declaredFeatures``, sorted (``declared_features``): what a 1.36+ API server
    reads to decide whether to proxy WebSocket streaming straight to our kubelet API. Left
    out of the status when empty, and an older server prunes it as an unknown field."""

    def all_labels(self) -> dict[str, str]:
        """The default labels (VK's, the well-known os/arch/hostname) with ``labels`` on top."""
        return {
            "type": "virtual-kubelet",
            "kubernetes.io/role": "agent",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": self.os,
            "kubernetes.io/arch": self.arch,
            "node.kubernetes.io/exclude-from-external-load-balancers": "true",
            **self.labels,
        }


def _node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


_CONDITIONS: tuple[tuple[str, str, str], ...] = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("NetworkUnavailable", "RouteCreated", "RouteController created a route"),
)


class NodeStatusReporter:
    """Registers the Node and patches its status; remembers transition times between patches.

    Not a task: ``run_node_status`` drives ``report`` periodically. ``uid`` is the node's uid
    once registered (it changes if the node had to be re-created).
    """

    def __init__(self, client: KubeClient, config: NodeConfig) -> None:
        self.client = client
        self.config = config
        self.uid = ""
        self._transitions: dict[str, tuple[str, str]] = {}
        """Condition type → (status, lastTransitionTime) as last reported."""
        self._ready = False
        self._message = "kubelet is starting"

    # ----- building the objects ---------------------------------------------------------

    def _condition(self, type_: str, status: str, reason: str, message: str, now: str) -> Any:
        previous = self._transitions.get(type_)
        since = previous[1] if previous is not None and previous[0] == status else now
        self._transitions[type_] = (status, since)
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    def status_body(self, *, ready: bool, message: str) -> dict[str, Any]:
        """The ``status`` we own, with heartbeat = now (also used for the initial POST)."""
        config = self.config
        now = format_time(utcnow())
        if ready:
            readiness = ("True", "KubeletReady", message or "kubelet is posting ready status")
        else:
            readiness = ("False", "KubeletNotReady", message or "kubelet is not ready")
        conditions = [self._condition("Ready", *readiness, now)]
        conditions += [self._condition(t, "False", r, m, now) for t, r, m in _CONDITIONS]
        addresses = []
        if config.internal_ip:
            addresses.append({"type": "InternalIP", "address": config.internal_ip})
        if config.publish_hostname:
            addresses.append({"type": "Hostname", "address": config.name})
        status: dict[str, Any] = {
            "phase": "Running",
            "conditions": conditions,
            "capacity": dict(config.capacity),
            "allocatable": dict(config.capacity),
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
            "nodeInfo": {
                "kubeletVersion": config.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": config.os,
                "architecture": config.arch,
                "osImage": "vk-trio (Vast.ai instances)",
                "kernelVersion": "",
                "containerRuntimeVersion": "vast://",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        if config.declared_features:
            status["declaredFeatures"] = sorted(set(config.declared_features))
        return status

    def _taints(self) -> list[dict[str, str]]:
        return [msgspec.to_builtins(taint) for taint in self.config.taints]

    def expect(self, ready: bool, message: str) -> None:
        """Set what the next write says (``register`` included) without writing now: a
        replica taking over a Ready node registers it Ready, with no NotReady flap."""
        self._ready, self._message = ready, message

    # ----- API calls --------------------------------------------------------------------

    async def register(self) -> str:
        """Create or re-adopt the Node, then report NotReady-or-current status; its uid.

        Raises ``KubeError`` (``KubeForbidden`` for RBAC) when the apiserver refuses.
        """
        path = _node_path(self.config.name)
        try:
            node = await self.client.request("GET", path)
        except KubeNotFound:
            node = None
        if node is None:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.config.name, "labels": self.config.all_labels()},
                "spec": {"taints": self._taints()},
                "status": self.status_body(ready=self._ready, message=self._message),
            }
            try:
                node = await self.client.request("POST", "/api/v1/nodes", json=body)
                logger.info("registered node", node=self.config.name)
            except KubeConflict:  # created concurrently (a second replica?): adopt it
                node = await self.client.request("GET", path)
        else:
            node = await self._reassert_metadata(node)
            logger.info("adopted existing node", node=self.config.name)
        self.uid = str(node["metadata"]["uid"])
        # Status in a POST is kept by the apiserver, but a patch costs little and also covers
        # the adopted case and servers that drop status on create.
        await self._patch_status()
        return self.uid

    async def _reassert_metadata(self, node: dict[str, Any]) -> dict[str, Any]:
        path = _node_path(self.config.name)
        result: dict[str, Any] = await self.client.request(
            "PATCH",
            path,
            json={"metadata": {"labels": self.config.all_labels()}},
            content_type=MERGE_PATCH,
        )
        present = {
            (t.get("key"), t.get("effect")) for t in (result.get("spec") or {}).get("taints") or []
        }
        missing = [t for t in self._taints() if (t["key"], t["effect"]) not in present]
        if missing:
            # Taints is a plain list for patches (no merge key): send the whole list, guarded
            # by the resourceVersion so a concurrent writer's taint is not lost.
            taints = list((result.get("spec") or {}).get("taints") or []) + missing
            body = {
                "metadata": {"resourceVersion": result["metadata"]["resourceVersion"]},
                "spec": {"taints": taints},
            }
            try:
                result = await self.client.request(
                    "PATCH", path, json=body, content_type=MERGE_PATCH
                )
            except KubeConflict:
                logger.warning("node taints changed concurrently; retry next start", path=path)
        return result

    async def report(self, *, ready: bool, message: str) -> None:
        """Patch our conditions (heartbeat now) and capacity; re-register if the node is gone.

        Raises ``KubeError`` after ``KubeClient.request``'s retries.
        """
        self._ready, self._message = ready, message
        try:
            await self._patch_status()
        except KubeNotFound:
            logger.warning("node was deleted; registering it again", node=self.config.name)
            await self.register()

    async def annotate(self, annotations: dict[str, str | None]) -> None:
        """Merge ``annotations`` into the Node's (None removes a key); ``kubectl describe node``
        shows them. Raises ``KubeError`` after ``KubeClient.request``'s retries."""
        body = {"metadata": {"annotations": annotations}}
        await self.client.request(
            "PATCH", _node_path(self.config.name), json=body, content_type=SMP
        )

    async def _patch_status(self) -> None:
        body = {"status": self.status_body(ready=self._ready, message=self._message)}
        await self.client.request(
            "PATCH", _node_path(self.config.name) + "/status", json=body, content_type=SMP
        )


async def run_node_status(
    client: KubeClient,
    reporter: NodeStatusReporter,
    *,
    interval: float = 60.0,
    health: Callable[[], tuple[bool, str]],
    check_interval: float = HEALTH_CHECK_INTERVAL,
    events: EventRecorder | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the Node's status current: at start, every ``interval``, and when health changes.

    ``health()`` returns (ready, message); it is polled every ``check_interval`` seconds and
    must not block (read a flag kept by whoever pings the provider).

    Owns: nothing but its timer. Retries: failed reports are logged and tried again at the
    next check (the request itself already retried transient errors). Escalates: any error of
    the first report (through ``nursery.start``: a node that cannot write its status should not
    start), and ``PermanentError`` (RBAC) later on, so an operator sees the crash.
    ``reporter.register()`` must have run first (the caller needs the uid for the lease).
    ``events`` records NodeReady / NodeNotReady on the Node when readiness changes, as the
    kubelet does (``kubectl describe node`` shows them).
    """
    del client  # the reporter holds it; kept in the signature for symmetry with run_lease
    ready, message = health()
    await reporter.report(ready=ready, message=message)
    last = (ready, message)
    last_report = trio.current_time()
    pending = False
    task_status.started()
    while True:
        await trio.sleep(check_interval)
        current = health()
        due = trio.current_time() - last_report >= interval
        if current == last and not due and not pending:
            continue
        try:
            await reporter.report(ready=current[0], message=current[1])
        except PermanentError:
            raise
        except KubeError as error:
            pending = True
            logger.warning(
                "node status report failed; retrying", retry_in=check_interval, error=str(error)
            )
            continue
        if current != last:
            logger.info("node readiness changed", ready=current[0], message=current[1])
        if current[0] != last[0] and events is not None:
            await _readiness_event(events, reporter, ready=current[0], why=current[1])
        last, last_report, pending = current, trio.current_time(), False


async def _readiness_event(
    events: EventRecorder, reporter: NodeStatusReporter, *, ready: bool, why: str
) -> None:
    state = "NodeReady" if ready else "NodeNotReady"
    await events.emit_for(
        Involved.node(reporter.config.name, reporter.uid),
        type="Normal",
        reason=state,
        message=f"Node {reporter.config.name} status is now: {state} ({why})",
    )
