"""Server-side printing: ``meta.k8s.io/v1`` Table responses, as ``kubectl get`` asks for.

kubectl does not format pods itself: it sends ``Accept: application/json;as=Table;...`` and
prints the rows the API server computed. So READY, STATUS (where a waiting reason such as
``NoOffers`` shows up) and the ``-o wide`` columns exist only if the server fills them in. The
column logic below follows ``pkg/printers/internalversion/printers.go`` (``printPod``,
``printNode``, ``printEvent``...) so that output looks like a real cluster's.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from vk_trio.devtools.sim.kube.kinds import TERMINAL_PHASES, Obj, Resource, now

Column = tuple[str, str, int]
"""(name, type, priority); priority 1 columns only show with ``-o wide``."""

Printer = tuple[Sequence[Column], Callable[[Obj], list[Any]]]


def human_duration(delta: datetime.timedelta) -> str:
    """apimachinery's ``duration.HumanDuration``: ``42s``, ``3m12s``, ``5h3m``, ``12d``."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 48 * 3600:
        return _minutes_and_hours(seconds)
    return _days_and_years(seconds // 3600)


def _minutes_and_hours(seconds: int) -> str:
    """``human_duration`` from two minutes to two days: ``3m12s``, ``42m``, ``5h3m``, ``30h``."""
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{hours}h"


def _days_and_years(hours: int) -> str:
    """``human_duration`` from two days on: ``3d4h``, ``12d``, ``2y5d``, ``9y``."""
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def _since(value: str | None) -> str:
    if not value:
        return "<unknown>"
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return human_duration(now() - moment)


def _age(obj: Obj) -> str:
    return _since(obj["metadata"].get("creationTimestamp"))


def _pod_status(pod: Obj) -> tuple[str, int, int, str]:
    """(STATUS, ready containers, restarts, last restart time) as ``printPod`` computes them."""
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    reason = status.get("reason") or status.get("phase") or ""
    init_count = len(spec.get("initContainers") or [])
    init_reason, restarts = _init_containers_status(status, init_count)
    ready, last_restart = 0, ""
    if init_reason is not None:
        reason = init_reason
    if init_reason is None or _condition_true(status, "Initialized"):
        reason, ready, container_restarts, last_restart = _containers_status(status, reason)
        restarts += container_restarts
    return _deletion_reason(pod) or reason, ready, restarts, last_restart


def _init_containers_status(status: Obj, init_count: int) -> tuple[str | None, int]:
    """(``Init:...`` reason while an init container has not succeeded, else None; init
    container restarts, counted up to the first one that has not succeeded)."""
    restarts = 0
    for index, container in enumerate(status.get("initContainerStatuses") or []):
        restarts += container.get("restartCount", 0)
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode", 0) == 0:
            continue
        if terminated:
            return "Init:" + (terminated.get("reason") or _exit_text(terminated)), restarts
        if waiting and waiting.get("reason") not in (None, "", "PodInitializing"):
            return "Init:" + waiting["reason"], restarts
        return f"Init:{index}/{init_count}", restarts
    return None, restarts


def _containers_status(status: Obj, reason: str) -> tuple[str, int, int, str]:
    """(STATUS, ready, restarts, last restart time) from the app containers, the last
    container's waiting or terminated reason winning over ``reason`` as in ``printPod``."""
    restarts, ready, last_restart, has_running = 0, 0, "", False
    for container in reversed(status.get("containerStatuses") or []):
        restarts += container.get("restartCount", 0)
        finished = ((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        last_restart = max(last_restart, finished or "")
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated:
            reason = terminated.get("reason") or _exit_text(terminated)
        elif container.get("ready") and state.get("running") is not None:
            has_running = True
            ready += 1
    if reason == "Completed" and has_running:
        reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    return reason, ready, restarts, last_restart


def _deletion_reason(pod: Obj) -> str | None:
    """``Unknown`` or ``Terminating`` for a pod being deleted, which override any other
    STATUS; None otherwise."""
    status = pod.get("status") or {}
    if not pod["metadata"].get("deletionTimestamp"):
        return None
    if status.get("reason") == "NodeLost":
        return "Unknown"
    if status.get("phase") not in TERMINAL_PHASES:
        return "Terminating"
    return None


def _exit_text(terminated: Obj) -> str:
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', 0)}"


def _condition_true(status: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _pod_cells(pod: Obj) -> list[Any]:
    reason, ready, restarts, last_restart = _pod_status(pod)
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({_since(last_restart)} ago)"
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_text,
        _age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        _gates_text(status, gates) if gates else "<none>",
    ]


def _gates_text(status: Obj, gates: list[Obj]) -> str:
    names = {g.get("conditionType") for g in gates}
    passed = sum(
        1
        for c in status.get("conditions") or []
        if c.get("type") in names and c.get("status") == "True"
    )
    return f"{passed}/{len(gates)}"


def _node_roles(labels: dict[str, str]) -> str:
    roles = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def _node_address(status: Obj, kind: str) -> str:
    for address in status.get("addresses") or []:
        if address.get("type") == kind:
            return str(address.get("address"))
    return "<none>"


def _node_cells(node: Obj) -> list[Any]:
    status, spec = node.get("status") or {}, node.get("spec") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    states = ["Ready" if c.get("status") == "True" else "NotReady" for c in ready] or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}
    return [
        node["metadata"]["name"],
        ",".join(states),
        _node_roles(node["metadata"].get("labels") or {}),
        _age(node),
        info.get("kubeletVersion", ""),
        _node_address(status, "InternalIP"),
        _node_address(status, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _event_cells(event: Obj) -> list[Any]:
    involved = event.get("involvedObject") or {}
    source = event.get("source") or {}
    source_text = source.get("component") or event.get("reportingComponent") or ""
    if source.get("host"):
        source_text = f"{source_text}, {source['host']}"
    last = event.get("lastTimestamp") or event.get("eventTime") or ""
    first = event.get("firstTimestamp") or event.get("eventTime") or ""
    return [
        _since(last) if last else "<unknown>",
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        source_text,
        event.get("message", ""),
        _since(first) if first else "<unknown>",
        event.get("count", 1),
        event["metadata"]["name"],
    ]


def _template_cells(workload: Obj) -> list[str]:
    """The ``-o wide`` columns of a workload: containers, images, selector."""
    spec = workload.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return [
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>",
    ]


def _deployment_cells(deployment: Obj) -> list[Any]:
    status = deployment.get("status") or {}
    return [
        deployment["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{(deployment.get('spec') or {}).get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(deployment),
        *_template_cells(deployment),
    ]


def _replica_set_cells(replica_set: Obj) -> list[Any]:
    status = replica_set.get("status") or {}
    return [
        replica_set["metadata"]["name"],
        (replica_set.get("spec") or {}).get("replicas", 1),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(replica_set),
        *_template_cells(replica_set),
    ]


def _daemon_set_cells(daemon_set: Obj) -> list[Any]:
    status = daemon_set.get("status") or {}
    template_spec = ((daemon_set.get("spec") or {}).get("template") or {}).get("spec") or {}
    selector = template_spec.get("nodeSelector") or {}
    return [
        daemon_set["metadata"]["name"],
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
        _age(daemon_set),
        *_template_cells(daemon_set),
    ]


def _binding_cells(binding: Obj) -> list[Any]:
    ref = binding.get("roleRef") or {}
    subjects = binding.get("subjects") or []

    def named(kind: str) -> str:
        return ", ".join(
            f"{s.get('namespace')}/{s['name']}" if kind == "ServiceAccount" else s["name"]
            for s in subjects
            if s.get("kind") == kind
        )

    return [
        binding["metadata"]["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(binding),
        named("User"),
        named("Group"),
        named("ServiceAccount"),
    ]


def _slice_ports(endpoint_slice: Obj) -> str:
    """``printEndpointSlice``'s PORTS: the port numbers, or ``<unset>``."""
    ports = [str(p["port"]) for p in endpoint_slice.get("ports") or [] if p.get("port")]
    return ",".join(ports) or "<unset>"


def _slice_endpoints(endpoint_slice: Obj) -> str:
    """``printEndpointSlice``'s ENDPOINTS: up to three addresses, then ``+ N more...``."""
    addresses = [a for e in endpoint_slice.get("endpoints") or [] for a in e.get("addresses", [])]
    if not addresses:
        return "<unset>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


_NAME: Column = ("Name", "string", 0)
_AGE: Column = ("Age", "string", 0)
_WORKLOAD_WIDE: list[Column] = [
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
]
_ROLE: Printer = (
    [_NAME, ("Created At", "date", 0)],
    lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")],
)
_BINDING: Printer = (
    [
        _NAME,
        ("Role", "string", 0),
        _AGE,
        ("Users", "string", 1),
        ("Groups", "string", 1),
        ("ServiceAccounts", "string", 1),
    ],
    _binding_cells,
)

PRINTERS: dict[str, Printer] = {
    "Pod": (
        [
            _NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            _AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        _pod_cells,
    ),
    "Node": (
        [
            _NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            _AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        _node_cells,
    ),
    "Event": (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "integer", 1),
            ("Name", "string", 1),
        ],
        _event_cells,
    ),
    "Namespace": (
        [_NAME, ("Status", "string", 0), _AGE],
        lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    "Lease": (
        [_NAME, ("Holder", "string", 0), _AGE],
        lambda o: [
            o["metadata"]["name"],
            (o.get("spec") or {}).get("holderIdentity", ""),
            _age(o),
        ],
    ),
    "ConfigMap": (
        [_NAME, ("Data", "integer", 0), _AGE],
        lambda o: [
            o["metadata"]["name"],
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _age(o),
        ],
    ),
    "Secret": (
        [_NAME, ("Type", "string", 0), ("Data", "integer", 0), _AGE],
        lambda o: [
            o["metadata"]["name"],
            o.get("type", ""),
            len(o.get("data") or {}) + len(o.get("stringData") or {}),
            _age(o),
        ],
    ),
    # What `kubectl apply` of deployments/ creates (printDeployment, printDaemonSet, ...).
    "Deployment": (
        [
            _NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            _AGE,
            *_WORKLOAD_WIDE,
        ],
        _deployment_cells,
    ),
    "ReplicaSet": (
        [
            _NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            _AGE,
            *_WORKLOAD_WIDE,
        ],
        _replica_set_cells,
    ),
    "DaemonSet": (
        [
            _NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            _AGE,
            *_WORKLOAD_WIDE,
        ],
        _daemon_set_cells,
    ),
    "EndpointSlice": (
        [
            _NAME,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            _AGE,
        ],
        lambda o: [
            o["metadata"]["name"],
            o.get("addressType", ""),
            _slice_ports(o),
            _slice_endpoints(o),
            _age(o),
        ],
    ),
    "ServiceAccount": (
        [_NAME, ("Secrets", "string", 0), _AGE],
        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), _age(o)],
    ),
    "ClusterRole": _ROLE,
    "Role": _ROLE,
    "ClusterRoleBinding": _BINDING,
    "RoleBinding": _BINDING,
    "CertificateSigningRequest": (  # printCertificateSigningRequest
        [
            _NAME,
            _AGE,
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("Condition", "string", 0),
        ],
        lambda o: [
            o["metadata"]["name"],
            _age(o),
            (o.get("spec") or {}).get("signerName", ""),
            (o.get("spec") or {}).get("username", ""),
            ",".join(
                [c["type"] for c in (o.get("status") or {}).get("conditions") or []]
                + (["Issued"] if (o.get("status") or {}).get("certificate") else [])
            )
            or "Pending",
        ],
    ),
}

_DEFAULT_PRINTER: Printer = ([_NAME, _AGE], lambda o: [o["metadata"]["name"], _age(o)])


def table(resource: Resource, items: Sequence[Obj], *, include_object: str, rv: str) -> Obj:
    """A ``Table`` of ``items``; each row carries the object's metadata (``includeObject``
    ``Metadata``, the default), the whole object (``Object``) or nothing (``None``)."""
    columns, cells = PRINTERS.get(resource.kind, _DEFAULT_PRINTER)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if (name, kind, priority) == _NAME else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority in columns
        ],
        "rows": [
            {"cells": cells(item), "object": _row_object(item, include_object)} for item in items
        ],
    }


def _row_object(obj: Obj, include_object: str) -> Obj | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
