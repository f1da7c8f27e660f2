"""The resource kinds the Kubernetes stand-in serves, and the per-kind rules of the real API.

A kind is mostly data (``Resource``: plural, kind, group, scope, short names); the few kinds
with behaviour of their own get it here as plain functions, mirroring the API server's
"strategies" (``pkg/registry/core/pod/strategy.go`` and friends):

* pods are defaulted on create (restart policy, grace period, QoS class, the default
  not-ready/unreachable tolerations) and their status is reset to ``Pending``, because that is
  what a node sees from a real cluster;
* pods, nodes and namespaces have a ``status`` subresource: the main resource ignores status
  writes and the subresource ignores everything else;
* pods are deleted gracefully when they are bound to a node and not terminal;
* Deployments, ReplicaSets and DaemonSets are defaulted on every write (strategy, replicas,
  the pod template's spec), start with an empty status and count ``metadata.generation`` up on
  every spec change, as their strategies do (``controllers`` acts on the first two);
* pods count ``metadata.generation`` too (1.33+, ``PodObservedGenerationTracking``): 1 at
  creation, one up for each spec change (an ephemeral container added) and for the graceful
  delete, never for metadata, status or the binding; a status write without
  ``observedGeneration`` keeps the one on record;
* a pod is bound to a node through its ``binding`` subresource (``bind_pod``), which sets
  ``spec.nodeName`` and the ``PodScheduled`` condition in one write.

RBAC kinds are stored and served, never enforced (the stand-in authorizes every request);
``tests/deployments/test_deployments.py`` checks the node's requests against the manifest's rules
instead.

No I/O and no state here: ``store`` calls these on copies it owns.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives and what discovery says about it."""

    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    """Whether ``/status`` exists and the main resource ignores ``.status`` on writes."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name used in error messages: ``pods``, ``leases.coordination.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()


_RBAC = "rbac.authorization.k8s.io"

RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", namespaced=False, short_names=("ns",), has_status=True),
    Resource("nodes", "Node", namespaced=False, short_names=("no",), has_status=True),
    Resource("pods", "Pod", short_names=("po",), has_status=True),
    Resource("events", "Event", short_names=("ev",)),
    Resource("secrets", "Secret"),
    Resource("configmaps", "ConfigMap", short_names=("cm",)),
    Resource("services", "Service", short_names=("svc",), has_status=True),
    Resource("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    Resource("leases", "Lease", group="coordination.k8s.io"),
    Resource("endpointslices", "EndpointSlice", group="discovery.k8s.io"),
    Resource("deployments", "Deployment", group="apps", short_names=("deploy",), has_status=True),
    Resource("daemonsets", "DaemonSet", group="apps", short_names=("ds",), has_status=True),
    Resource("replicasets", "ReplicaSet", group="apps", short_names=("rs",), has_status=True),
    Resource("clusterroles", "ClusterRole", group=_RBAC, namespaced=False),
    Resource("clusterrolebindings", "ClusterRoleBinding", group=_RBAC, namespaced=False),
    Resource("roles", "Role", group=_RBAC),
    Resource("rolebindings", "RoleBinding", group=_RBAC),
    # Stored only: nothing here runs the disruption controller that would write its status.
    Resource("poddisruptionbudgets", "PodDisruptionBudget", group="policy", short_names=("pdb",)),
    Resource(
        "certificatesigningrequests",
        "CertificateSigningRequest",
        group="certificates.k8s.io",
        namespaced=False,
        short_names=("csr",),
        has_status=True,
    ),
)

BY_PLURAL: dict[str, Resource] = {r.plural: r for r in RESOURCES}

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

DEFAULT_GRACE_SECONDS = 30
"""``spec.terminationGracePeriodSeconds`` when a pod does not say (the API server default)."""

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

EPHEMERAL_CONTAINERS = "ephemeralcontainers"
"""The pod subresource through which ``kubectl debug`` adds an ephemeral container."""

WORKLOADS = frozenset({"Deployment", "DaemonSet", "ReplicaSet"})
"""Kinds whose ``metadata.generation`` the server counts (a controller compares it with
``status.observedGeneration``; ``kubectl rollout status`` reads both)."""

_DEFAULT_TOLERATIONS = [
    {
        "key": f"node.kubernetes.io/{key}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    for key in ("not-ready", "unreachable")
]
"""Added by the DefaultTolerationSeconds admission plugin to every pod that lacks them."""


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime | None = None) -> str:
    """``metav1.Time`` on the wire: RFC 3339, whole seconds, ``Z``."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_for_create(resource: Resource, obj: Obj) -> None:
    """Apply the defaults and resets the API server applies before storing a new object."""
    if resource.kind == "Pod":
        _default_pod(obj)
        obj["metadata"]["generation"] = 1
    elif resource.kind == "Namespace":
        obj["spec"] = obj.get("spec") or {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif resource.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif resource.kind in WORKLOADS:
        obj["metadata"]["generation"] = 1
        obj["status"] = {}
        _default_workload(resource, obj.setdefault("spec", {}))


def _default_workload(resource: Resource, spec: Obj) -> None:
    """The apps/v1 defaults (``pkg/apis/apps/v1/defaults.go``), the pod template's included:
    the server applies them on every write, so what a controller compares (a Deployment's
    template with its ReplicaSets') is always in the same, defaulted form."""
    if resource.kind in ("Deployment", "ReplicaSet"):
        spec.setdefault("replicas", 1)
    if resource.kind == "Deployment":
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("progressDeadlineSeconds", 600)
    if resource.kind in ("Deployment", "DaemonSet"):
        spec.setdefault("revisionHistoryLimit", 10)
    template = spec.get("template")
    if isinstance(template, dict):
        _default_pod_spec(template.setdefault("spec", {}))


def _default_pod(pod: Obj) -> None:
    """A new pod: the pod spec defaults, then what admission plugins add to pods (and not to
    templates): service account, priority, the default tolerations. No ``PodScheduled``
    condition: on a real server only a binding (the scheduler) sets it; for a pod created with
    ``spec.nodeName`` it is the kubelet that adds it."""
    spec = pod.setdefault("spec", {})
    _default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    _add_default_tolerations(spec)
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


def _default_pod_spec(spec: Obj) -> None:
    """``SetDefaults_PodSpec`` and the container defaults, for pods and pod templates."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("securityContext", {})
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        _default_container(container)


def _add_default_tolerations(spec: Obj) -> None:
    """The DefaultTolerationSeconds admission plugin, which runs on pod create and update:
    a ``kubectl apply`` that replaces ``tolerations`` with the file's list gets them back."""
    tolerations = spec.setdefault("tolerations", [])
    for default in _DEFAULT_TOLERATIONS:
        if not any(t.get("key") == default["key"] for t in tolerations):
            tolerations.append(dict(default))


def _default_container(container: Obj) -> None:
    """Container defaults; requests default to limits, as the API server's defaulting does."""
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    pull = "Always" if tag in ("", "latest") and "@" not in image else "IfNotPresent"
    container.setdefault("imagePullPolicy", pull)
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    resources = container.setdefault("resources", {})
    for kind in ("limits", "requests"):  # quantities are strings on the wire (1 → "1")
        if resources.get(kind):
            resources[kind] = {name: str(value) for name, value in resources[kind].items()}
    if resources.get("limits"):
        resources["requests"] = {**resources["limits"], **(resources.get("requests") or {})}


def qos_class(spec: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, computed from cpu/memory requests and limits."""
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    requests, limits = [], []
    for container in containers:
        resources = container.get("resources") or {}
        requests.append({k: v for k, v in (resources.get("requests") or {}).items() if k in _QOS})
        limits.append({k: v for k, v in (resources.get("limits") or {}).items() if k in _QOS})
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        set(lim) == _QOS and all(req.get(k, lim[k]) == lim[k] for k in lim)
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


_QOS = frozenset({"cpu", "memory"})


def merge_write(resource: Resource, old: Obj, new: Obj, *, subresource: str | None) -> Obj:
    """What is stored when ``new`` is written over ``old`` (main resource or ``/status``).

    Identity and lifecycle metadata (uid, creation and deletion timestamps) always come from
    ``old``: clients cannot change them with an update. Through ``/status`` only ``.status``
    changes (nodes keep label and annotation changes too, which VK's node status patch relies
    on); through the main resource of a kind with a status subresource, ``.status`` is kept.
    """
    if subresource == EPHEMERAL_CONTAINERS:  # only the list changes (kubectl debug adds one)
        wanted = (new.get("spec") or {}).get("ephemeralContainers") or []
        result = {**old, "spec": {**(old.get("spec") or {}), "ephemeralContainers": wanted}}
        result["metadata"] = _counted(old, result)
        return result
    if subresource == "status":
        result = {**old, "status": new.get("status", {})}
        if resource.kind == "Node":
            result["metadata"] = _keep_identity(old["metadata"], new.get("metadata", {}))
        if resource.kind == "Pod":
            _keep_observed_generation(old, result)
        return result
    result = {**new, "metadata": _keep_identity(old["metadata"], new.get("metadata", {}))}
    if resource.has_status:
        result["status"] = old.get("status", {})
    if resource.kind == "Pod":
        result["spec"] = copy.deepcopy(result.get("spec") or {})
        _add_default_tolerations(result["spec"])
        # Only the ephemeralcontainers subresource changes them.
        result["spec"].pop("ephemeralContainers", None)
        if "ephemeralContainers" in (old.get("spec") or {}):
            result["spec"]["ephemeralContainers"] = old["spec"]["ephemeralContainers"]
        result["metadata"] = _counted(old, result)
    if resource.kind in WORKLOADS:  # the server's count, whatever the client sent
        result["spec"] = copy.deepcopy(result.get("spec") or {})
        _default_workload(resource, result["spec"])
        generation = old["metadata"]["generation"]
        changed = result.get("spec") != old.get("spec")
        result["metadata"]["generation"] = generation + 1 if changed else generation
    return result


def _counted(old: Obj, new: Obj) -> Obj:
    """``new``'s metadata with a pod's ``generation`` (``PodObservedGenerationTracking``):
    the server's count, whatever the client sent, one up when the spec changed (an
    ephemeral container added included), never for metadata or status."""
    meta = dict(new["metadata"])
    generation = old["metadata"].get("generation", 1)
    changed = (new.get("spec") or {}) != (old.get("spec") or {})
    meta["generation"] = generation + 1 if changed else generation
    return meta


def _keep_observed_generation(old: Obj, new: Obj) -> None:
    """A status write that leaves out ``observedGeneration`` (or sends 0) keeps the one on
    record, as the pod strategy does, so that an older writer never clears it."""
    observed = (old.get("status") or {}).get("observedGeneration")
    status = new["status"]
    if observed and not status.get("observedGeneration"):
        new["status"] = {**status, "observedGeneration": observed}


_IDENTITY = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp")


def _keep_identity(old: Obj, new: Obj) -> Obj:
    meta = {k: v for k, v in new.items() if k not in (*_IDENTITY, "deletionGracePeriodSeconds")}
    for key in (*_IDENTITY, "deletionGracePeriodSeconds"):
        if key in old:
            meta[key] = old[key]
    return meta


def subresources(resource: Resource) -> tuple[str, ...]:
    """Subresources served besides ``status`` (``binding`` and ``scale`` have their own
    routes): a pod's ``ephemeralcontainers``, which ``kubectl debug`` patches."""
    return (EPHEMERAL_CONTAINERS,) if resource.kind == "Pod" else ()


def update_error(resource: Resource, old: Obj, new: Obj) -> str | None:
    """Why the API server would refuse to store ``new`` over ``old`` (422), or None.

    Only the rules a client can break by mistake are checked: a pod in a terminal phase
    stays there (``ValidatePodStatusUpdate``), which is what makes Failed/Succeeded safe to
    act on, an ephemeral container, once added, stays as it is, and ``activeDeadlineSeconds``
    only shrinks.
    """
    if resource.kind != "Pod":
        return None
    kept = {c.get("name"): c for c in (new.get("spec") or {}).get("ephemeralContainers") or []}
    for container in (old.get("spec") or {}).get("ephemeralContainers") or []:
        name = container.get("name")
        if kept.get(name) != container:
            why = "may not be removed" if name not in kept else "may not be changed"
            return (
                f'spec.ephemeralContainers: Forbidden: existing ephemeral containers "{name}" {why}'
            )
    before = (old.get("status") or {}).get("phase")
    after = (new.get("status") or {}).get("phase")
    if before in TERMINAL_PHASES and after != before:
        return f"status.phase: Forbidden: cannot transition from terminal phase {before} to {after}"
    return _deadline_error(old.get("spec") or {}, new.get("spec") or {})


def _deadline_error(old: Obj, new: Obj) -> str | None:
    """``activeDeadlineSeconds`` may be set once, or shrink; never grow nor go
    (``ValidatePodUpdate``)."""
    was, wanted = old.get("activeDeadlineSeconds"), new.get("activeDeadlineSeconds")
    field = "spec.activeDeadlineSeconds: Invalid value"
    if wanted is None:
        if was is None:
            return None
        return f'{field}: "null": must not update from a positive integer to nil value'
    if not isinstance(wanted, int) or not 0 <= wanted <= 2**31 - 1:
        return f"{field}: {wanted}: must be between 0 and 2147483647, inclusive"
    if was is not None and was < wanted:
        return f"{field}: {wanted}: must be less than or equal to previous value"
    return None


def grace_period(resource: Resource, obj: Obj, requested: int | None) -> int:
    """Seconds a DELETE leaves the object terminating; 0 means remove it now.

    Only pods are deleted gracefully, and only while a node may be running them: an unbound
    or terminal pod has nobody to wait for (``CheckGracefulDelete`` in the pod strategy).
    """
    if resource.kind != "Pod":
        return 0
    if not obj.get("spec", {}).get("nodeName"):
        return 0
    if obj.get("status", {}).get("phase") in TERMINAL_PHASES:
        return 0
    if requested is not None:
        return max(requested, 0)
    value = obj.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    return int(value) if value is not None else DEFAULT_GRACE_SECONDS


def bind_pod(pod: Obj, node: str) -> tuple[Obj | None, str]:
    """The pod bound to ``node``, or (None, why not): the binding subresource's ``assignPod``
    (``pkg/registry/core/pod/storage``) sets ``spec.nodeName`` and ``PodScheduled=True`` in one
    write, and refuses a pod that is being deleted, already bound, or gated."""
    name, spec = pod["metadata"]["name"], pod.get("spec") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return None, f"pod {name} is being deleted, cannot be assigned to a host"
    if spec.get("nodeName"):
        return None, f'pod {name} is already assigned to node "{spec["nodeName"]}"'
    if spec.get("schedulingGates"):
        return None, f"pod {name} has non-empty .spec.schedulingGates"
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = node
    set_condition(bound, {"type": "PodScheduled", "status": "True"})
    return bound, ""


def set_condition(obj: Obj, condition: Obj) -> None:
    """Put ``condition`` into ``obj.status.conditions`` (replacing the one of its type) the way
    ``UpdatePodCondition`` does: ``lastTransitionTime`` moves only when ``status`` changes."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    old = next((c for c in conditions if c.get("type") == condition["type"]), None)
    new = {"lastProbeTime": None, **condition}
    if old is not None and old.get("status") == condition["status"]:
        new["lastTransitionTime"] = old.get("lastTransitionTime")
    else:
        new["lastTransitionTime"] = timestamp()
    if old is None:
        conditions.append(new)
    else:
        conditions[conditions.index(old)] = new
