"""The object store behind the Kubernetes stand-in: CRUD, resourceVersions and watch fan-out.

One ``Store`` holds every object in memory, keyed by (plural, namespace, name). Every write
bumps one global counter, the resourceVersion, exactly like etcd's revision, and appends a
change to a bounded history; watchers replay that history from the version they ask for and
then receive live changes through a bounded trio memory channel.

Why a bounded history and bounded channels: those are the two ways a real API server makes a
client start over (410 Expired for a version that fell out of the window; a watch closed when
the client cannot keep up), and the node's informer must survive both. ``compact()`` and
``close_watches()`` force them on demand.

Concurrency: all methods are synchronous and run in the one trio loop, so each write and its
fan-out to watchers is atomic; no locks. Stored objects are never mutated in place (every
write stores a fresh copy), so a change in the history can share them safely.

Errors: every client mistake raises ``ApiError``, which carries the HTTP code and the
``Status`` body the real API server would send.
"""

from __future__ import annotations

import collections
import copy
import datetime
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vk_trio.devtools.sim.kube import patch as kube_patch
from vk_trio.devtools.sim.kube.kinds import (
    BY_PLURAL,
    Obj,
    Resource,
    bind_pod,
    grace_period,
    merge_write,
    now,
    prepare_for_create,
    timestamp,
    update_error,
)
from vk_trio.devtools.sim.kube.selector import Matcher
from vk_trio.devtools.sim.kube.validation import aggregate, endpoint_slice_errors

Key = tuple[str, str, str]
"""(plural, namespace or "", name)."""


class ApiError(Exception):
    """An API error with the real server's ``Status`` shape; ``code`` is the HTTP status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        resource: Resource | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.resource = resource
        self.name = name

    def status(self) -> Obj:
        details: Obj = {}
        if self.name is not None:
            details["name"] = self.name
        if self.resource is not None:
            if self.resource.group:
                details["group"] = self.resource.group
            details["kind"] = self.resource.plural
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if details:
            body["details"] = details
        body["code"] = self.code
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource.qualified} "{name}" not found', resource=resource, name=name
    )


def conflict(resource: Resource, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {resource.qualified} "{name}": {why}'
    return ApiError(409, "Conflict", message, resource=resource, name=name)


PROPAGATION_FINALIZERS: dict[str, str | None] = {
    "Background": None,
    "Orphan": "orphan",
    "Foreground": "foregroundDeletion",
}
"""``propagationPolicy`` -> the finalizer a DELETE adds (what the garbage collector reads)."""

STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


@dataclass(frozen=True)
class Change:
    """One committed write, as kept in the history and fanned out to watchers."""

    rv: int
    type: str
    """ADDED, MODIFIED or DELETED."""
    resource: Resource
    obj: Obj
    """The object after the change (for DELETED: its final state)."""
    old: Obj | None
    """The object before a MODIFIED change, so selector transitions can be computed."""


@dataclass(eq=False)
class Watcher:
    """One open watch: what it wants, and the channel its changes are pushed into."""

    resource: Resource
    namespace: str | None
    matches: Matcher
    send: trio.MemorySendChannel[tuple[str, Obj]]
    receive: trio.MemoryReceiveChannel[tuple[str, Obj]]
    start_rv: int = 0
    """The store's resourceVersion when the watch opened: ``initial`` brings the client here."""
    initial: list[tuple[str, Obj]] = field(default_factory=list)
    """Events owed before anything from the channel: synthetic ADDEDs or replayed history."""

    def wants(self, obj: Obj) -> bool:
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.matches(obj)

    def translate(self, change: Change) -> tuple[str, Obj] | None:
        """The event this watcher sees for ``change``, with selector transitions applied.

        An object that starts matching arrives as ADDED; one that stops matching as DELETED,
        carrying its previous content with the new resourceVersion (what the apiserver's
        watch cache does).
        """
        if change.resource is not self.resource:
            return None
        now_in = self.wants(change.obj)
        if change.type != "MODIFIED" or change.old is None:
            return (change.type, change.obj) if now_in else None
        was_in = self.wants(change.old)
        if was_in and now_in:
            return ("MODIFIED", change.obj)
        if now_in:
            return ("ADDED", change.obj)
        if was_in:
            old = copy.deepcopy(change.old)
            old["metadata"]["resourceVersion"] = change.obj["metadata"]["resourceVersion"]
            return ("DELETED", old)
        return None


class Expired(Exception):
    """A watch asked for a resourceVersion older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        """``oldest`` is the first resourceVersion still replayable, as in the real message."""
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Store:
    """Every object of the stand-in, its history, and its open watches.

    ``history`` bounds how many changes stay replayable; ``watch_buffer`` bounds how many
    undelivered events one watcher may hold before its stream is ended.
    ``allow_loopback_endpoints`` lets EndpointSlices name loopback addresses, which the real
    server refuses: a test-only switch for simulated instances that listen on 127.0.0.1.
    """

    def __init__(
        self,
        *,
        history: int = 1000,
        watch_buffer: int = 1000,
        allow_loopback_endpoints: bool = False,
    ) -> None:
        self.rv = 0
        self.allow_loopback_endpoints = allow_loopback_endpoints
        self._objects: dict[Key, Obj] = {}
        self._history: collections.deque[Change] = collections.deque(maxlen=history)
        self._floor = 0
        """Watches must start at or after this version; older history is gone."""
        self._watch_buffer = watch_buffer
        self._watchers: set[Watcher] = set()
        self._changed = trio.Event()
        self.listeners: list[Callable[[Change], None]] = []
        """Called with every committed change, in the writer's step: how the stand-in's own
        controllers (``controllers``) learn of changes without a watch, so that
        ``watchers`` counts clients only. A listener must only take note (queue work)."""

    # ----- reads -------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(_key(resource, namespace, name))
        if obj is None:
            raise not_found(resource, name)
        return obj

    def list(
        self,
        resource: Resource,
        namespace: str | None,
        matches: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        """Matching objects sorted by (namespace, name), like etcd's key order."""
        return [
            obj
            for key, obj in sorted(self._objects.items(), key=lambda item: item[0])
            if key[0] == resource.plural
            and (namespace is None or key[1] == namespace)
            and (matches is None or matches(obj))
        ]

    # ----- writes ------------------------------------------------------------------------

    def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        _check_namespace(resource, namespace, meta)
        if resource.namespaced:
            self._require_namespace(meta["namespace"])
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(resource, "", "metadata.name: Required value: name is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        key = _key(resource, meta.get("namespace"), meta["name"])
        if key in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.qualified} "{meta["name"]}" already exists',
                resource=resource,
                name=meta["name"],
            )
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        prepare_for_create(resource, obj)
        self._validate(resource, obj)
        return self._commit("ADDED", resource, key, obj, None)

    def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PUT: replace the object; a ``metadata.resourceVersion`` in ``body`` must be current.

        Every kind served here allows unconditional updates (no resourceVersion), as their
        real strategies do.
        """
        old = self.get(resource, namespace, name)
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
            raise conflict(resource, name, STALE)
        return self._write(resource, old, copy.deepcopy(body), subresource)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PATCH with one of the three patch types; resourceVersion/uid in the result are
        preconditions (a patch that sets them to anything but the current values is a 409)."""
        old = self.get(resource, namespace, name)
        patched = _apply_patch(content_type, copy.deepcopy(old), body, resource, name)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise _invalid(resource, name, "patch produced something that is not an object")
        new_meta, old_meta = patched["metadata"], old["metadata"]
        if new_meta.get("resourceVersion") != old_meta["resourceVersion"]:
            raise conflict(resource, name, STALE)
        if new_meta.get("uid") != old_meta["uid"]:
            raise conflict(resource, name, _uid_mismatch(new_meta.get("uid"), old_meta["uid"]))
        return self._write(resource, old, patched, subresource)

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation: str | None = None,
    ) -> Obj:
        """DELETE, with the API server's graceful deletion and finalizer rules.

        A pod bound to a node and not terminal only gets ``deletionTimestamp`` and
        ``deletionGracePeriodSeconds`` (a MODIFIED event) until a delete with grace 0; an
        object with finalizers stays, marked, until an update empties them. ``propagation``
        ``Orphan`` or ``Foreground`` adds the ``orphan`` or ``foregroundDeletion`` finalizer
        in the same write, for the garbage collector to act on (``Background``, the default,
        adds none). Returns the object's last state.
        """
        old = self.get(resource, namespace, name)
        meta = old["metadata"]
        if uid is not None and uid != meta["uid"]:
            raise conflict(resource, name, _uid_mismatch(uid, meta["uid"]))
        if resource_version is not None and resource_version != meta["resourceVersion"]:
            why = (
                f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}"
            )
            raise conflict(resource, name, why)
        finalizers = list(meta.get("finalizers") or [])
        added = PROPAGATION_FINALIZERS.get(propagation or "Background")
        if added is not None and added not in finalizers:
            finalizers.append(added)
        grace = grace_period(resource, old, grace_seconds)
        key = _key(resource, namespace, name)
        if grace == 0 and not finalizers:
            return self._commit("DELETED", resource, key, copy.deepcopy(old), old)
        marked = _mark_deleted(old, grace)
        if finalizers != (meta.get("finalizers") or []):
            marked = copy.deepcopy(marked)
            marked["metadata"]["finalizers"] = finalizers
        if marked == old:
            return old
        return self._commit("MODIFIED", resource, key, marked, old)

    def bind(self, namespace: str, name: str, node: str, *, uid: str | None = None) -> Obj:
        """POST ``pods/{name}/binding``: bind the pod to ``node`` (``kinds.bind_pod``);
        409 when it cannot be bound or ``uid`` is not the pod's."""
        pods = BY_PLURAL["pods"]
        old = self.get(pods, namespace, name)
        if uid and uid != old["metadata"]["uid"]:
            raise conflict(pods, name, _uid_mismatch(uid, old["metadata"]["uid"]))
        bound, why = bind_pod(old, node)
        if bound is None:
            message = f'Operation cannot be fulfilled on pods/binding "{name}": {why}'
            raise ApiError(409, "Conflict", message, resource=pods, name=name)
        return self._commit("MODIFIED", pods, _key(pods, namespace, name), bound, old)

    # ----- watches -----------------------------------------------------------------------

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        matches: Matcher,
        since: int | None,
    ) -> Watcher:
        """Open a watch: synthetic ADDEDs when ``since`` is None, else history after ``since``.

        Raises ``Expired`` when ``since`` predates the retained history. The caller must
        ``unwatch`` the returned watcher when its stream ends.
        """
        if since is not None and since < self._floor:
            raise Expired(since, self._floor + 1)
        send, receive = trio.open_memory_channel[tuple[str, Obj]](self._watch_buffer)
        watcher = Watcher(resource, namespace, matches, send, receive, start_rv=self.rv)
        if since is None:
            watcher.initial = [("ADDED", o) for o in self.list(resource, namespace, watcher.wants)]
        else:
            replay = (watcher.translate(c) for c in self._history if c.rv > since)
            watcher.initial = [event for event in replay if event is not None]
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.send.close()

    def compact(self) -> None:
        """Forget all history: any watch from a version before now gets 410 Expired."""
        self._history.clear()
        self._floor = self.rv

    def close_watches(self) -> None:
        """End every open watch stream (after it drains), as an API server restart does."""
        for watcher in list(self._watchers):
            self.unwatch(watcher)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def notify(self) -> None:
        """Wake every ``changed()`` waiter (called after each write, and by the HTTP layer
        after each request so that waits on request counters wake too)."""
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next ``notify()``."""
        await self._changed.wait()

    # ----- internals ---------------------------------------------------------------------

    def _validate(self, resource: Resource, obj: Obj) -> None:
        """Refuse (422) what the real server's field validation refuses (``validation``)."""
        if resource.kind != "EndpointSlice":
            return
        errors = endpoint_slice_errors(obj, allow_loopback=self.allow_loopback_endpoints)
        if errors:
            raise _invalid(resource, obj["metadata"]["name"], aggregate(errors))

    def _require_namespace(self, namespace: str) -> None:
        if _key(BY_PLURAL["namespaces"], None, namespace) not in self._objects:
            raise not_found(BY_PLURAL["namespaces"], namespace)

    def _write(self, resource: Resource, old: Obj, new: Obj, subresource: str | None) -> Obj:
        merged = merge_write(resource, old, new, subresource=subresource)
        refusal = update_error(resource, old, merged)
        if refusal is not None:
            raise _invalid(resource, old["metadata"]["name"], refusal)
        self._validate(resource, merged)
        merged["apiVersion"], merged["kind"] = resource.api_version, resource.kind
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        meta = merged["metadata"]
        key = _key(resource, meta.get("namespace"), meta["name"])
        finalized = meta.get("deletionTimestamp") and not meta.get("finalizers")
        if finalized and not meta.get("deletionGracePeriodSeconds"):
            return self._commit("DELETED", resource, key, merged, old)
        if merged == old:
            return old
        return self._commit("MODIFIED", resource, key, merged, old)

    def _commit(self, kind: str, resource: Resource, key: Key, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        change = Change(self.rv, kind, resource, obj, old if kind == "MODIFIED" else None)
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(change)
        self._fan_out(change)
        for listener in self.listeners:
            listener(change)
        self.notify()
        return obj

    def _fan_out(self, change: Change) -> None:
        for watcher in list(self._watchers):
            event = watcher.translate(change)
            if event is None:
                continue
            try:
                watcher.send.send_nowait(event)
            except trio.WouldBlock:
                self.unwatch(watcher)


def _key(resource: Resource, namespace: str | None, name: str) -> Key:
    return (resource.plural, (namespace or "") if resource.namespaced else "", name)


def _check_namespace(resource: Resource, namespace: str | None, meta: Obj) -> None:
    if not resource.namespaced:
        meta.pop("namespace", None)
        return
    if namespace is None:
        raise ApiError(400, "BadRequest", "the namespace must be given in the URL")
    if meta.get("namespace", namespace) != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    meta["namespace"] = namespace


def _uid_mismatch(wanted: object, actual: object) -> str:
    return f"Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}"


def _invalid(resource: Resource, name: str, why: str) -> ApiError:
    """422 Invalid, named by the group-qualified kind (``EndpointSlice.discovery.k8s.io``)."""
    kind = f"{resource.kind}.{resource.group}" if resource.group else resource.kind
    return ApiError(
        422, "Invalid", f'{kind} "{name}" is invalid: {why}', resource=resource, name=name
    )


def _apply_patch(content_type: str, target: Obj, body: Any, resource: Resource, name: str) -> Any:
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/strategic-merge-patch+json":
            return kube_patch.strategic_merge_patch(target, body)
        if media == "application/merge-patch+json":
            return kube_patch.merge_patch(target, body)
        if media == "application/json-patch+json":
            return kube_patch.json_patch(target, body)
    except kube_patch.PatchError as error:
        if error.status == 422:
            raise _invalid(resource, name, str(error)) from error
        raise ApiError(error.status, "BadRequest", str(error)) from error
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, "
        f"application/strategic-merge-patch+json (got {media!r})",
    )


def _mark_deleted(old: Obj, grace: int) -> Obj:
    """The object with its deletion recorded; an existing, shorter grace period is kept."""
    meta = old["metadata"]
    current = meta.get("deletionGracePeriodSeconds")
    if meta.get("deletionTimestamp") and current is not None and current <= grace:
        return old
    marked = copy.deepcopy(old)
    if not meta.get("deletionTimestamp") and meta.get("generation"):
        marked["metadata"]["generation"] = meta["generation"] + 1  # a graceful delete is an update
    moment = now() + datetime.timedelta(seconds=grace)
    marked["metadata"]["deletionTimestamp"] = timestamp(moment)
    marked["metadata"]["deletionGracePeriodSeconds"] = grace
    return marked
