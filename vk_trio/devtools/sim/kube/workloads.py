"""The ReplicaSet and Deployment controllers (``controllers`` says what they do and how they
run), with what the scheduler and the garbage collector share with them: the work queue, owned
objects, Events."""

from __future__ import annotations

import copy
import math
import secrets
from collections import defaultdict
from typing import Any

import msgspec
import trio

from vk_trio.devtools.sim.kube import scheduler as kube_scheduler
from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, TERMINAL_PHASES, Obj, Resource, timestamp
from vk_trio.devtools.sim.kube.store import ApiError, Store

HASH_LABEL = "pod-template-hash"


REVISION = "deployment.kubernetes.io/revision"


DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"


MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""apimachinery's ``rand.String`` alphabet (no vowels, no look-alikes), also the hash's."""


Key = tuple[str, str, str]
"""(what, namespace, name): what is a plural (``pods``, ``replicasets``, ``deployments``),
``gc`` (name is the deleted owner's uid), ``finalize`` (name is ``plural/name`` of an owner
that may be waiting on its dependents) or ``nodes`` (every pending pod)."""


ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"


POD_RESOURCE, NODE_RESOURCE = BY_PLURAL["pods"], BY_PLURAL["nodes"]
_EVENTS = BY_PLURAL["events"]


_REPLICASETS, _DEPLOYMENTS = BY_PLURAL["replicasets"], BY_PLURAL["deployments"]


class WorkloadControllers:
    """ReplicaSets keep their pods, Deployments their ReplicaSets; the base of ``Controllers``."""

    store: Store
    _queue: dict[Key, None]
    _wake: trio.Event
    _dependents: defaultdict[str, set[tuple[str, str, str]]]

    def _enqueue(self, key: Key) -> None:
        self._queue[key] = None
        self._wake.set()

    def _owned(self, owner: Obj, plural: str) -> list[Obj]:
        """The objects of ``plural`` whose controller is ``owner``."""
        uid, namespace = owner["metadata"]["uid"], owner["metadata"]["namespace"]
        found = []
        for what, ns, name in sorted(self._dependents.get(uid, ())):
            obj = (
                self._get(BY_PLURAL[what], ns, name) if what == plural and ns == namespace else None
            )
            if obj is not None and (controller_ref(obj) or {}).get("uid") == uid:
                found.append(obj)
        return found

    def _get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        """The stored object (never to be changed in place), or None."""
        try:
            return self.store.get(resource, namespace, name)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def _event(self, obj: Obj, kind: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about ``obj``, as ``kubectl describe`` lists them."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = timestamp()
        self.store.create(
            _EVENTS,
            namespace,
            {
                "metadata": {
                    "name": f"{meta['name']}.{secrets.token_hex(8)}",
                    "namespace": namespace,
                },
                "involvedObject": {
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "namespace": namespace,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "source": {"component": component},
                "reportingComponent": component,
                "reportingInstance": "",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    def _sync_replicaset(self, namespace: str, name: str) -> None:
        rs = self._get(_REPLICASETS, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        active = [p for p in self._owned(rs, "pods") if _active(p)]
        missing = int(rs["spec"].get("replicas", 1)) - len(active)
        for _ in range(missing):
            pod = self.store.create(POD_RESOURCE, namespace, _pod_from_template(rs))
            self._event(
                rs,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                "replicaset-controller",
            )
        for pod in _deletion_order(active)[: max(-missing, 0)]:
            self.store.delete(POD_RESOURCE, namespace, pod["metadata"]["name"])
            self._event(
                rs,
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {pod['metadata']['name']}",
                "replicaset-controller",
            )
        active = [p for p in self._owned(rs, "pods") if _active(p)]
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        ready = sum(1 for p in active if _ready(p))
        counts = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1
                for p in active
                if template_labels.items() <= (p["metadata"].get("labels") or {}).items()
            ),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"]["generation"],
        }
        # Like the Go type's omitempty: zero counts are left out, except replicas.
        status = {k: v for k, v in counts.items() if v or k == "replicas"}
        self.store.update(
            _REPLICASETS, namespace, name, {**rs, "status": status}, subresource="status"
        )
        owner = controller_ref(rs)
        if owner is not None and owner["kind"] == "Deployment":
            # Its pods changed, maybe without changing its status (an old pod finally gone,
            # which a Recreate rollout waits for): the Deployment looks again.
            self._enqueue(("deployments", namespace, owner["name"]))

    def _sync_deployment(self, namespace: str, name: str) -> None:
        deploy = self._get(_DEPLOYMENTS, namespace, name)
        if deploy is None or deploy["metadata"].get("deletionTimestamp"):
            return
        spec = deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        owned = self._owned(deploy, "replicasets")
        new = next(
            (rs for rs in owned if _same_template(rs["spec"]["template"], spec["template"])), None
        )
        old = sorted(
            (rs for rs in owned if rs is not new),
            key=lambda rs: rs["metadata"]["creationTimestamp"],
        )
        surge, unavailable = _rolling_limits(deploy)
        created = False
        if spec["strategy"]["type"] == "Recreate":
            for rs in old:
                self._scale(deploy, rs, 0)
            if any(
                pod_phase(p) not in TERMINAL_PHASES for rs in old for p in self._owned(rs, "pods")
            ):
                new = None  # the new ReplicaSet waits until every old pod is gone
            elif new is None:
                new, created = self._new_replicaset(deploy, owned, replicas), True
            else:
                new = self._scale(deploy, new, replicas)
        else:
            total = sum(int(rs["spec"]["replicas"]) for rs in owned)
            if new is None:
                start = replicas if not old else min(replicas, max(replicas + surge - total, 0))
                new, created = self._new_replicaset(deploy, owned, start), True
            elif int(new["spec"]["replicas"]) > replicas:
                new = self._scale(deploy, new, replicas)
            else:
                room = max(replicas + surge - total, 0)
                new = self._scale(deploy, new, min(replicas, int(new["spec"]["replicas"]) + room))
            old = self._scale_down_old(deploy, new, old, replicas - unavailable)
        if new is not None:
            new = self._keep_revision(deploy, new, old)
        self._deployment_status(deploy, new, old, replicas - unavailable, created)

    def _new_replicaset(self, deploy: Obj, owned: list[Obj], replicas: int) -> Obj:
        meta, spec = deploy["metadata"], deploy["spec"]
        template = copy.deepcopy(spec["template"])
        pod_hash = template_hash(template)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        surge, _ = _rolling_limits(deploy)
        revision = max((_revision(rs) for rs in owned), default=0) + 1
        rs = self.store.create(
            _REPLICASETS,
            meta["namespace"],
            {
                "metadata": {
                    "name": f"{meta['name']}-{pod_hash}",
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {
                        REVISION: str(revision),
                        DESIRED_REPLICAS: str(spec["replicas"]),
                        MAX_REPLICAS: str(int(spec["replicas"]) + surge),
                    },
                    "ownerReferences": [_owner_ref(deploy)],
                },
                "spec": {
                    "replicas": replicas,
                    "minReadySeconds": spec.get("minReadySeconds", 0),
                    "selector": selector,
                    "template": template,
                },
            },
        )
        message = f"Scaled up replica set {rs['metadata']['name']} from 0 to {replicas}"
        self._event(deploy, "Normal", "ScalingReplicaSet", message, "deployment-controller")
        return rs

    def _scale(self, deploy: Obj, rs: Obj, replicas: int) -> Obj:
        before = int(rs["spec"]["replicas"])
        if before == replicas:
            return rs
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = replicas
        updated["metadata"].setdefault("annotations", {})[DESIRED_REPLICAS] = str(
            deploy["spec"]["replicas"]
        )
        meta = rs["metadata"]
        stored = self.store.update(_REPLICASETS, meta["namespace"], meta["name"], updated)
        direction = "up" if replicas > before else "down"
        message = f"Scaled {direction} replica set {meta['name']} from {before} to {replicas}"
        self._event(deploy, "Normal", "ScalingReplicaSet", message, "deployment-controller")
        return stored

    def _scale_down_old(
        self, deploy: Obj, new: Obj, old: list[Obj], min_available: int
    ) -> list[Obj]:
        """``reconcileOldReplicaSets``, simplified: old ReplicaSets (oldest first) lose first
        their unavailable pods, then available ones while ``min_available`` still holds."""
        every = [new, *old]
        all_pods = sum(int(rs["spec"]["replicas"]) for rs in every)
        new_unavailable = int(new["spec"]["replicas"]) - _available(new)
        budget = max(all_pods - min_available - new_unavailable, 0)
        result = []
        for rs in old:
            unhealthy = int(rs["spec"]["replicas"]) - _available(rs)
            cut = min(budget, max(unhealthy, 0))
            budget -= cut
            result.append(self._scale(deploy, rs, int(rs["spec"]["replicas"]) - cut) if cut else rs)
        spare = max(sum(_available(rs) for rs in every) - min_available, 0)
        final = []
        for rs in result:
            cut = min(spare, int(rs["spec"]["replicas"]))
            spare -= cut
            final.append(self._scale(deploy, rs, int(rs["spec"]["replicas"]) - cut) if cut else rs)
        return final

    def _keep_revision(self, deploy: Obj, new: Obj, old: list[Obj]) -> Obj:
        """The current ReplicaSet carries the highest revision (a template rolled back to gets
        a new one) and the Deployment repeats it, as ``kubectl rollout history`` expects."""
        revision = _revision(new)
        if any(_revision(rs) >= revision for rs in old):
            revision = max(_revision(rs) for rs in old) + 1
            updated = copy.deepcopy(new)
            updated["metadata"]["annotations"][REVISION] = str(revision)
            meta = new["metadata"]
            new = self.store.update(_REPLICASETS, meta["namespace"], meta["name"], updated)
        if (deploy["metadata"].get("annotations") or {}).get(REVISION) != str(revision):
            updated = copy.deepcopy(deploy)
            updated["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            meta = deploy["metadata"]
            self.store.update(_DEPLOYMENTS, meta["namespace"], meta["name"], updated)
        return new

    def _deployment_status(
        self, deploy: Obj, new: Obj | None, old: list[Obj], min_available: int, created: bool
    ) -> None:
        meta = deploy["metadata"]
        current = self._get(_DEPLOYMENTS, meta["namespace"], meta["name"])
        if current is None:
            return
        # Their latest state: scaling them above may have changed their status already.
        new = new and self._get(_REPLICASETS, meta["namespace"], new["metadata"]["name"])
        old = [
            r
            for rs in old
            if (r := self._get(_REPLICASETS, meta["namespace"], rs["metadata"]["name"]))
        ]
        every = [rs for rs in [new, *old] if rs is not None]
        replicas = int(deploy["spec"]["replicas"])
        status_of = [rs.get("status") or {} for rs in every]
        available = sum(int(s.get("availableReplicas", 0)) for s in status_of)
        updated = int(((new or {}).get("status") or {}).get("replicas", 0))
        counts = {
            "observedGeneration": meta["generation"],
            "replicas": sum(int(s.get("replicas", 0)) for s in status_of),
            "updatedReplicas": updated,
            "readyReplicas": sum(int(s.get("readyReplicas", 0)) for s in status_of),
            "availableReplicas": available,
            "unavailableReplicas": max(
                sum(int(rs["spec"]["replicas"]) for rs in every) - available, 0
            ),
        }
        status: Obj = {k: v for k, v in counts.items() if v or k == "observedGeneration"}
        conditions = copy.deepcopy((current.get("status") or {}).get("conditions") or [])
        if available >= min_available:
            _set_deploy_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            _set_deploy_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        if new is not None:
            rs_name = new["metadata"]["name"]
            complete = (
                updated == replicas and available == replicas and counts["replicas"] == replicas
            )
            if complete:
                progress = (
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                )
            elif created:
                progress = ("NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
            else:
                progress = ("ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
            _set_deploy_condition(conditions, "Progressing", "True", *progress)
        status["conditions"] = conditions
        self.store.update(
            _DEPLOYMENTS,
            meta["namespace"],
            meta["name"],
            {**current, "status": status},
            subresource="status",
        )


def template_hash(template: Obj) -> str:
    """The ``pod-template-hash`` label value: FNV-32a of the template, its decimal digits
    mapped through ``NAME_ALPHABET`` (``rand.SafeEncodeString``), as ``ComputeHash`` does.
    Same shape as the real value, not the same value (that one hashes a Go struct dump); no
    ``collisionCount``: a name collision is an error here."""
    data = msgspec.json.encode(_semantic(template), order="sorted")
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(NAME_ALPHABET[ord(digit) % len(NAME_ALPHABET)] for digit in str(value))


def _pod_from_template(rs: Obj) -> Obj:
    template, meta = rs["spec"].get("template") or {}, rs["metadata"]
    template_meta = template.get("metadata") or {}
    suffix = "".join(secrets.choice(NAME_ALPHABET) for _ in range(5))
    pod_meta: Obj = {
        "name": f"{meta['name']}-{suffix}",
        "generateName": f"{meta['name']}-",
        "namespace": meta["namespace"],
        "labels": dict(template_meta.get("labels") or {}),
        "ownerReferences": [_owner_ref(rs)],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def plural_of_kind(kind: str) -> str | None:
    """The plural of ``kind`` if the stand-in serves that kind, else None."""
    return next((r.plural for r in BY_PLURAL.values() if r.kind == kind), None)


def _owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_ref(obj: Obj) -> Obj | None:
    """The owner reference marked ``controller``, if any: the object that manages this one."""
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def pod_phase(pod: Obj) -> str:
    """The pod's ``status.phase``, empty when it has none yet."""
    return str((pod.get("status") or {}).get("phase", ""))


def awaits_scheduling(pod: Obj) -> bool:
    """Waiting for the scheduler: unbound, not being deleted, for ``default-scheduler``."""
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and spec.get("schedulerName", kube_scheduler.SCHEDULER_NAME)
        == kube_scheduler.SCHEDULER_NAME
        and pod_phase(pod) not in TERMINAL_PHASES
    )


def _active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod_phase(pod) not in TERMINAL_PHASES


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _deletion_order(pods: list[Obj]) -> list[Obj]:
    """``ActivePodsWithRanks``, shortened: unbound before bound, Pending before Running, not
    ready before ready, then newer before older; a ReplicaSet deletes from the front."""
    order = {"Pending": 0, "Unknown": 1, "Running": 2}
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))[::-1]
    return sorted(
        newest_first,
        key=lambda p: (bool(p["spec"].get("nodeName")), order.get(pod_phase(p), 0), _ready(p)),
    )


def scheduling_view(node: Obj) -> tuple[object, ...]:
    """What of a node the scheduler looks at: a heartbeat that changes none of it is no reason
    to try the pending pods again."""
    spec = node.get("spec") or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    labels = sorted((node["metadata"].get("labels") or {}).items())
    return (ready, bool(spec.get("unschedulable")), labels, repr(spec.get("taints")))


def _same_template(rs_template: Obj, template: Obj) -> bool:
    """``EqualIgnoreHash``: the templates are equal once the hash label is left out, compared
    as Go compares them (``_semantic``)."""

    def without_hash(t: Obj) -> Any:
        t = copy.deepcopy(t)
        (t.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
        return _semantic(t)

    return bool(without_hash(rs_template) == without_hash(template))


def _semantic(value: Any) -> Any:
    """``value`` without null, ``{}`` and ``[]`` fields: what a Go struct holds either way.
    kubectl's ``rollout undo`` sends a template re-encoded from Go (``creationTimestamp:
    null``, ``resources: {}``), which must still equal the one it came from."""
    if isinstance(value, dict):
        items = ((k, _semantic(v)) for k, v in value.items())
        return {k: v for k, v in items if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(item) for item in value]
    return value


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def _available(rs: Obj) -> int:
    return int((rs.get("status") or {}).get("availableReplicas", 0))


def _rolling_limits(deploy: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts: percentages of ``replicas``, surge rounded
    up and unavailable down; both 0 becomes (0, 1), as in ``ResolveFenceposts``. Recreate
    allows no surge and no unavailability (while it has pods, it has all of them)."""
    spec = deploy["spec"]
    if spec["strategy"]["type"] != "RollingUpdate":
        return 0, 0
    rolling = spec["strategy"].get("rollingUpdate") or {}
    replicas = int(spec.get("replicas", 1))
    surge = _count(rolling.get("maxSurge", "25%"), replicas, up=True)
    unavailable = _count(rolling.get("maxUnavailable", "25%"), replicas, up=False)
    if surge == 0 and unavailable == 0:
        return 0, 1
    return surge, min(unavailable, replicas)


def _count(value: object, total: int, *, up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = total * int(value[:-1]) / 100
        return math.ceil(share) if up else math.floor(share)
    return int(str(value))


def _set_deploy_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str
) -> None:
    """Deployment conditions carry ``lastUpdateTime`` (moves when reason or message change)
    and ``lastTransitionTime`` (moves when status changes)."""
    old = next((c for c in conditions if c.get("type") == kind), None)
    now = timestamp()
    new = {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }
    if old is not None:
        if old.get("status") == status:
            new["lastTransitionTime"] = old.get("lastTransitionTime", now)
            if (old.get("reason"), old.get("message")) == (reason, message):
                new["lastUpdateTime"] = old.get("lastUpdateTime", now)
        conditions[conditions.index(old)] = new
    else:
        conditions.append(new)
