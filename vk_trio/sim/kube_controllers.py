"""The stand-in's control plane: scheduler, ReplicaSet and Deployment controllers, and the
garbage collector, so that what a user applies runs the way it does on a real cluster.

Why in a stand-in: without them an applied Deployment shows 0/1 forever and an applied pod stays
Pending with no node; the demo and the README's walkthrough would have to play the control
plane themselves, and the node would only ever see pods created already bound.

* **scheduler**: binds each pending pod (no ``spec.nodeName``, ``schedulerName``
  ``default-scheduler``) to a node it fits (``kube_scheduler``) through the same code as the
  ``binding`` subresource, recording a ``Scheduled`` Event; a pod that fits nowhere gets
  ``PodScheduled=False`` (``Unschedulable``) and a ``FailedScheduling`` Event, and is tried
  again whenever a node changes in a way that matters (Ready, labels, taints).
* **ReplicaSet**: keeps ``spec.replicas`` active pods (not terminating, not terminal) named
  ``<replicaset>-<5 random>`` with a controller ``ownerReference``, creates the missing ones,
  deletes the extra ones (unbound, then not ready, then newest first), and reports ``replicas``,
  ``fullyLabeledReplicas``, ``readyReplicas``, ``availableReplicas`` (= ready: no
  ``minReadySeconds``), ``observedGeneration``.
* **Deployment**: one ReplicaSet per pod template, named ``<deployment>-<pod-template-hash>``
  and labelled with the hash (an FNV-32a hash of the template, encoded like the real one, but
  not the same value: the real one hashes Go structs); ``Recreate`` scales the old ReplicaSets to
  0 and creates the new one only once their pods are gone; ``RollingUpdate`` surges the new one
  by ``maxSurge`` and scales the old ones down while ``maxUnavailable`` allows. Status
  (``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas``,
  ``unavailableReplicas``, ``observedGeneration``, ``Available``/``Progressing`` conditions)
  follows ``pkg/controller/deployment/sync.go``, so ``kubectl get deploy`` and ``kubectl rollout
  status`` read it as usual; revisions are the ``deployment.kubernetes.io/revision``
  annotations. Not done: ``paused``, ``progressDeadlineSeconds`` timing out, cleanup of old
  ReplicaSets past ``revisionHistoryLimit``, adoption of orphans matching a selector.
* **garbage collector**: when an owner is deleted (``propagationPolicy=Background``,
  kubectl's default), its dependents (``ownerReferences``) are deleted too (pods gracefully),
  or lose the reference if another owner remains. ``Orphan`` (the ``orphan`` finalizer): the
  dependents lose the reference, then the owner goes. ``Foreground`` (``foregroundDeletion``):
  the dependents are deleted and the owner goes once they are all gone (all, not only those
  with ``blockOwnerDeletion``). Owners that never existed or vanished unseen (a dependent
  created with a made-up owner) are not collected.

How it runs: the store calls ``_on_change`` for every committed write (``Store.listeners``); it
only queues keys. ``run`` (a task of ``KubeSim.serve``) works through the queue, one object at a
time, with a checkpoint between objects so that requests are served meanwhile. Every write is
idempotent (the store commits nothing when an object does not change), which is what makes the
loop settle. A client error from the store (an object deleted meanwhile) is logged and the
object is dropped from the queue: the next change re-queues it.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections import Counter, defaultdict
from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.sim import kube_scheduler
from vk_trio.sim.kube_kinds import (
    BY_PLURAL,
    TERMINAL_PHASES,
    Obj,
    Resource,
    set_condition,
    timestamp,
)
from vk_trio.sim.kube_store import ApiError, Change, Store

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

_PODS, _NODES, _EVENTS = BY_PLURAL["pods"], BY_PLURAL["nodes"], BY_PLURAL["events"]
_REPLICASETS, _DEPLOYMENTS = BY_PLURAL["replicasets"], BY_PLURAL["deployments"]


class Controllers:
    """The control plane of one ``Store``: construct it (it registers its listener), then run
    ``run`` in a nursery."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: dict[Key, None] = {}
        """Keys to sync, in arrival order, each at most once (a dict is an ordered set)."""
        self._wake = trio.Event()
        self._dependents: defaultdict[str, set[tuple[str, str, str]]] = defaultdict(set)
        """Owner uid -> (plural, namespace, name) of every object that names it as owner."""
        store.listeners.append(self._on_change)

    async def run(self) -> None:
        """Sync queued objects until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._queue:
                key = next(iter(self._queue))
                del self._queue[key]
                try:
                    self._sync(key)
                except ApiError as error:
                    logger.debug("stand-in controller skipped", key=str(key), error=error.message)
                await trio.lowlevel.checkpoint()

    # ----- what to sync ------------------------------------------------------------------

    def _enqueue(self, key: Key) -> None:
        self._queue[key] = None
        self._wake.set()

    def _on_change(self, change: Change) -> None:
        """Queue what ``change`` may affect (called inside the store's write: no writes here)."""
        obj, meta = change.obj, change.obj["metadata"]
        plural, namespace = change.resource.plural, meta.get("namespace", "")
        key = (plural, namespace, meta["name"])
        before = (change.old or {}).get("metadata", {}).get("ownerReferences") or []
        after = [] if change.type == "DELETED" else meta.get("ownerReferences") or []
        for ref in before:
            self._dependents[ref["uid"]].discard(key)
        for ref in after:
            self._dependents[ref["uid"]].add(key)
        if change.type == "DELETED":
            for ref in meta.get("ownerReferences") or []:
                self._dependents[ref["uid"]].discard(key)
                owner_plural = _plural(ref.get("kind", ""))
                if owner_plural is not None:  # maybe deleting in the foreground, waiting
                    self._enqueue(("finalize", namespace, f"{owner_plural}/{ref['name']}"))
            if self._dependents.get(meta["uid"]):
                self._enqueue(("gc", namespace, meta["uid"]))
        elif meta.get("deletionTimestamp") and {ORPHAN, FOREGROUND} & set(
            meta.get("finalizers") or []
        ):
            self._enqueue(("finalize", namespace, f"{plural}/{meta['name']}"))
        owner = _controller_ref(obj)
        if owner is not None and owner["kind"] in ("ReplicaSet", "Deployment"):
            self._enqueue((f"{owner['kind'].lower()}s", namespace, owner["name"]))
        pending = plural == "pods" and change.type != "DELETED" and _pending(obj)
        if pending or plural in ("replicasets", "deployments"):
            self._enqueue(key)
        elif plural == "nodes" and (
            change.old is None or _scheduling_view(change.old) != _scheduling_view(obj)
        ):
            self._enqueue(("nodes", "", ""))

    def _sync(self, key: Key) -> None:
        what, namespace, name = key
        if what == "pods":
            self._schedule(namespace, name)
        elif what == "nodes":
            for pod in self.store.list(_PODS, None, _pending):
                self._enqueue(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))
        elif what == "replicasets":
            self._sync_replicaset(namespace, name)
        elif what == "deployments":
            self._sync_deployment(namespace, name)
        elif what == "gc":
            self._collect(name)
        elif what == "finalize":
            plural, _, owner = name.partition("/")
            self._finalize(BY_PLURAL[plural], namespace or None, owner)

    # ----- scheduler ---------------------------------------------------------------------

    def _schedule(self, namespace: str, name: str) -> None:
        pod = self._get(_PODS, namespace, name)
        if pod is None or not _pending(pod):
            return
        if pod["spec"].get("schedulingGates"):
            self._pod_unscheduled(
                pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates"
            )
            return
        load = Counter(
            p["spec"]["nodeName"]
            for p in self.store.list(_PODS, None)
            if p["spec"].get("nodeName") and _phase(p) not in TERMINAL_PHASES
        )
        node, message = kube_scheduler.choose(pod, self.store.list(_NODES, None), load)
        if node is None:
            if self._pod_unscheduled(pod, "Unschedulable", message):
                self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
            return
        self.store.bind(namespace, name, node, uid=pod["metadata"]["uid"])
        message = f"Successfully assigned {namespace}/{name} to {node}"
        self._event(pod, "Normal", "Scheduled", message, "default-scheduler")

    def _pod_unscheduled(self, pod: Obj, reason: str, message: str) -> bool:
        """Set ``PodScheduled=False``; False when it already said so (nothing written)."""
        updated = copy.deepcopy(pod)
        condition = {"type": "PodScheduled", "status": "False", "reason": reason}
        set_condition(updated, {**condition, "message": message})
        meta = pod["metadata"]
        stored = self.store.update(
            _PODS, meta["namespace"], meta["name"], updated, subresource="status"
        )
        return stored is not pod

    # ----- ReplicaSet --------------------------------------------------------------------

    def _owned(self, owner: Obj, plural: str) -> list[Obj]:
        """The objects of ``plural`` whose controller is ``owner``."""
        uid, namespace = owner["metadata"]["uid"], owner["metadata"]["namespace"]
        found = []
        for what, ns, name in sorted(self._dependents.get(uid, ())):
            obj = (
                self._get(BY_PLURAL[what], ns, name) if what == plural and ns == namespace else None
            )
            if obj is not None and (_controller_ref(obj) or {}).get("uid") == uid:
                found.append(obj)
        return found

    def _sync_replicaset(self, namespace: str, name: str) -> None:
        rs = self._get(_REPLICASETS, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        active = [p for p in self._owned(rs, "pods") if _active(p)]
        missing = int(rs["spec"].get("replicas", 1)) - len(active)
        for _ in range(missing):
            pod = self.store.create(_PODS, namespace, _pod_from_template(rs))
            self._event(
                rs,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                "replicaset-controller",
            )
        for pod in _deletion_order(active)[: max(-missing, 0)]:
            self.store.delete(_PODS, namespace, pod["metadata"]["name"])
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
        owner = _controller_ref(rs)
        if owner is not None and owner["kind"] == "Deployment":
            # Its pods changed, maybe without changing its status (an old pod finally gone,
            # which a Recreate rollout waits for): the Deployment looks again.
            self._enqueue(("deployments", namespace, owner["name"]))

    # ----- Deployment --------------------------------------------------------------------

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
            if any(_phase(p) not in TERMINAL_PHASES for rs in old for p in self._owned(rs, "pods")):
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

    # ----- garbage collector -------------------------------------------------------------

    def _collect(self, owner_uid: str) -> None:
        """Delete the dependents of a deleted owner (or drop it from their owners)."""
        for plural, namespace, name in sorted(self._dependents.pop(owner_uid, set())):
            resource = BY_PLURAL[plural]
            obj = self._get(resource, namespace or None, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            others = [r for r in refs if r["uid"] != owner_uid and self._owner_exists(r, namespace)]
            if others:
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = [r for r in refs if r["uid"] != owner_uid]
                self.store.update(resource, namespace or None, name, updated)
            else:
                self.store.delete(resource, namespace or None, name)

    def _finalize(self, resource: Resource, namespace: str | None, name: str) -> None:
        """An owner deleted with ``Orphan`` or ``Foreground``: act on its dependents, then drop
        the finalizer (the store then removes the owner)."""
        owner = self._get(resource, namespace, name)
        if owner is None or not owner["metadata"].get("deletionTimestamp"):
            return
        uid, finalizers = owner["metadata"]["uid"], owner["metadata"].get("finalizers") or []
        dependents = [
            (BY_PLURAL[plural], obj)
            for plural, ns, dependent in sorted(self._dependents.get(uid, ()))
            if (obj := self._get(BY_PLURAL[plural], ns or None, dependent)) is not None
        ]
        if ORPHAN in finalizers:
            for dependent_resource, obj in dependents:
                updated = copy.deepcopy(obj)
                refs = obj["metadata"].get("ownerReferences") or []
                updated["metadata"]["ownerReferences"] = [r for r in refs if r["uid"] != uid]
                meta = obj["metadata"]
                self.store.update(dependent_resource, meta.get("namespace"), meta["name"], updated)
            done = ORPHAN
        elif FOREGROUND in finalizers:
            for dependent_resource, obj in dependents:
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    self.store.delete(dependent_resource, meta.get("namespace"), meta["name"])
            if dependents:
                return  # again when the last of them is gone
            done = FOREGROUND
        else:
            return
        updated = copy.deepcopy(owner)
        updated["metadata"]["finalizers"] = [f for f in finalizers if f != done]
        self.store.update(resource, namespace, name, updated)

    def _owner_exists(self, ref: Obj, namespace: str) -> bool:
        plural = _plural(ref.get("kind", ""))
        if plural is None:
            return True  # a kind the stand-in does not serve: cannot tell, keep the reference
        resource = BY_PLURAL[plural]
        owner = self._get(resource, namespace if resource.namespaced else None, ref["name"])
        return owner is not None and owner["metadata"]["uid"] == ref["uid"]

    # ----- helpers -----------------------------------------------------------------------

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


# ----- pure helpers ------------------------------------------------------------------------


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


def _plural(kind: str) -> str | None:
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


def _controller_ref(obj: Obj) -> Obj | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def _pending(pod: Obj) -> bool:
    """Waiting for the scheduler: unbound, not being deleted, for ``default-scheduler``."""
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and spec.get("schedulerName", kube_scheduler.SCHEDULER_NAME)
        == kube_scheduler.SCHEDULER_NAME
        and _phase(pod) not in TERMINAL_PHASES
    )


def _active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and _phase(pod) not in TERMINAL_PHASES


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
        key=lambda p: (bool(p["spec"].get("nodeName")), order.get(_phase(p), 0), _ready(p)),
    )


def _scheduling_view(node: Obj) -> tuple[object, ...]:
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
