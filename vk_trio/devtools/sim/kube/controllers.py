"""The stand-in's control plane: scheduler, ReplicaSet and Deployment controllers, and the
garbage collector, so that what a user applies runs the way it does on a real cluster.

Why in a stand-in: without them an applied Deployment shows 0/1 forever and an applied pod stays
Pending with no node; the demo and the README's walkthrough would have to play the control
plane themselves, and the node would only ever see pods created already bound.

* **scheduler**: binds each pending pod (no ``spec.nodeName``, ``schedulerName``
  ``default-scheduler``) to a node it fits (``scheduler``) through the same code as the
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
from collections import Counter, defaultdict

import trio
from loguru import logger

from vk_trio.devtools.sim.kube import scheduler as kube_scheduler
from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, TERMINAL_PHASES, Obj, Resource, set_condition
from vk_trio.devtools.sim.kube.store import ApiError, Change, Store
from vk_trio.devtools.sim.kube.workloads import (
    FOREGROUND,
    NODE_RESOURCE,
    ORPHAN,
    POD_RESOURCE,
    Key,
    WorkloadControllers,
    awaits_scheduling,
    controller_ref,
    plural_of_kind,
    pod_phase,
    scheduling_view,
)


class Controllers(WorkloadControllers):
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

    def _on_change(self, change: Change) -> None:
        """Queue what ``change`` may affect (called inside the store's write: no writes here)."""
        obj, meta = change.obj, change.obj["metadata"]
        plural, namespace = change.resource.plural, meta.get("namespace", "")
        key = (plural, namespace, meta["name"])
        self._track_owners(change, key)
        if change.type == "DELETED":
            self._on_deleted(meta, key)
        elif meta.get("deletionTimestamp") and {ORPHAN, FOREGROUND} & set(
            meta.get("finalizers") or []
        ):
            self._enqueue(("finalize", namespace, f"{plural}/{meta['name']}"))
        owner = controller_ref(obj)
        if owner is not None and owner["kind"] in ("ReplicaSet", "Deployment"):
            self._enqueue((f"{owner['kind'].lower()}s", namespace, owner["name"]))
        pending = plural == "pods" and change.type != "DELETED" and awaits_scheduling(obj)
        if pending or plural in ("replicasets", "deployments"):
            self._enqueue(key)
        elif plural == "nodes" and (
            change.old is None or scheduling_view(change.old) != scheduling_view(obj)
        ):
            self._enqueue(("nodes", "", ""))

    def _track_owners(self, change: Change, key: Key) -> None:
        """Keep ``_dependents`` in step with the owners ``change`` adds or drops, so that the
        garbage collector finds an owner's dependents without listing every kind."""
        meta = change.obj["metadata"]
        before = (change.old or {}).get("metadata", {}).get("ownerReferences") or []
        after = [] if change.type == "DELETED" else meta.get("ownerReferences") or []
        for ref in before:
            self._dependents[ref["uid"]].discard(key)
        for ref in after:
            self._dependents[ref["uid"]].add(key)

    def _on_deleted(self, meta: Obj, key: Key) -> None:
        """A deleted object may be the last dependent an owner deleting in the foreground
        waits for, and may itself own objects the garbage collector must now deal with."""
        _, namespace, _ = key
        for ref in meta.get("ownerReferences") or []:
            self._dependents[ref["uid"]].discard(key)
            owner_plural = plural_of_kind(ref.get("kind", ""))
            if owner_plural is not None:  # maybe deleting in the foreground, waiting
                self._enqueue(("finalize", namespace, f"{owner_plural}/{ref['name']}"))
        if self._dependents.get(meta["uid"]):
            self._enqueue(("gc", namespace, meta["uid"]))

    def _sync(self, key: Key) -> None:
        what, namespace, name = key
        if what == "pods":
            self._schedule(namespace, name)
        elif what == "nodes":
            for pod in self.store.list(POD_RESOURCE, None, awaits_scheduling):
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

    def _schedule(self, namespace: str, name: str) -> None:
        pod = self._get(POD_RESOURCE, namespace, name)
        if pod is None or not awaits_scheduling(pod):
            return
        if pod["spec"].get("schedulingGates"):
            self._pod_unscheduled(
                pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates"
            )
            return
        load = Counter(
            p["spec"]["nodeName"]
            for p in self.store.list(POD_RESOURCE, None)
            if p["spec"].get("nodeName") and pod_phase(p) not in TERMINAL_PHASES
        )
        node, message = kube_scheduler.choose(pod, self.store.list(NODE_RESOURCE, None), load)
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
            POD_RESOURCE, meta["namespace"], meta["name"], updated, subresource="status"
        )
        return stored is not pod

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
        plural = plural_of_kind(ref.get("kind", ""))
        if plural is None:
            return True  # a kind the stand-in does not serve: cannot tell, keep the reference
        resource = BY_PLURAL[plural]
        owner = self._get(resource, namespace if resource.namespaced else None, ref["name"])
        return owner is not None and owner["metadata"]["uid"] == ref["uid"]
