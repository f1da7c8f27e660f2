"""A Kubernetes API server stand-in: real HTTP, real semantics, in one trio loop.

The node code (``vk_trio.kube``) and the real ``kubectl`` both talk to this over a socket, so
what is tested is the wire protocol, not a mock of it. Served:

* core/v1 namespaces, nodes, pods, events, secrets, configmaps, services, serviceaccounts,
  coordination.k8s.io/v1 leases, apps/v1 deployments, replicasets and daemonsets, and the four
  rbac.authorization.k8s.io/v1 kinds (``kinds``), with ``/status`` for pods, nodes,
  namespaces, services and the workloads, ``pods/{name}/binding`` and
  ``{deployments,replicasets}/{name}/scale``; enough for ``kubectl apply`` of ``deployments/``;
* GET/LIST (field and label selectors, ``limit``/``continue``), WATCH (``resourceVersion``,
  bookmarks, ``timeoutSeconds``, 410 Expired), POST, PUT, PATCH (strategic merge, merge,
  JSON patch), DELETE (graceful pod deletion, finalizers, preconditions) (``store``);
* discovery (``/version``, ``/api``, ``/apis``...), OpenAPI v3 and ``fieldValidation``
  (``openapi``) and ``as=Table`` responses (``table``) so that ``kubectl
  get/describe/create/apply/delete`` work against it, validation on;
* a scheduler, the ReplicaSet and Deployment controllers and the garbage collector
  (``controllers``, ``scheduler``), running while the server serves.

The kubelet API's side of the API server (``node_api``): ``pods/{name}/log`` and
``nodes/{name}/proxy/...`` proxied to the node's kubelet over HTTPS with the stand-in's
kubelet-client certificate, CSR approval and signing, TokenReview and SubjectAccessReview. The
stand-in's CA (``pki``) is in the kubeconfig it writes, as a real cluster's is.

Not served: authentication (any token is accepted), ``/openapi/v2``, server-side apply,
other subresources, other controllers (DaemonSets, Jobs... get no pods).

Run it with ``vk-trio sim kube --listen 127.0.0.1:0 --kubeconfig-out kubeconfig.yaml``; in
tests, use the ``kube_sim`` fixture (``tests/plugins/kube_sim.py``).
"""

from __future__ import annotations

import base64
import collections
import copy
import functools
import inspect
import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio
import yaml

from vk_trio.devtools.sim.kube import table as kube_table
from vk_trio.devtools.sim.kube.controllers import Controllers
from vk_trio.devtools.sim.kube.discovery import discovery_response
from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, Obj, Resource, subresources
from vk_trio.devtools.sim.kube.node_api import NodeApi
from vk_trio.devtools.sim.kube.selector import SelectorError
from vk_trio.devtools.sim.kube.store import (
    PROPAGATION_FINALIZERS,
    ApiError,
    Expired,
    Store,
    Watcher,
)
from vk_trio.devtools.sim.kube.wire import (
    SCALABLE,
    Target,
    bookmark_event,
    encode_event,
    field_warnings,
    json_body,
    method_not_allowed,
    one_event_stream,
    paginate,
    parse_target,
    patched_view,
    request_matcher,
    resource_of_kind,
    scale_of,
    truthy,
    wants_table,
)
from vk_trio.http_server import Request, Response, serve_http

CONTEXT = "vk-trio-sim"
"""Name of the cluster, user and context in kubeconfigs written by the stand-in."""


WATCH_BATCH = 100
"""Queued watch events sent in one write at most (a client reading slowly still gets
them in order, just in fewer, larger chunks)."""


DEFAULT_WATCH_SECONDS = 1800.0
"""How long a watch without ``timeoutSeconds`` stays open (the real server picks 30-60 min)."""


PRE_CREATED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


Predicate = Callable[["KubeSim"], object] | Callable[[], object]


class KubeSim:
    """The API server stand-in: a ``Store`` behind an HTTP handler, plus in-process helpers.

    Construct, then ``await nursery.start(sim.serve)`` (returns the URL, also in ``sim.url``).
    ``history`` is how many changes stay replayable for watches (older versions get 410
    Expired); ``bookmark_interval`` is the seconds between BOOKMARK events on watches that
    allow them; ``watch_buffer`` is how many undelivered events a watcher may hold before the
    server ends its stream (as a real server does with a slow client).
    ``allow_loopback_endpoints`` accepts EndpointSlices that name 127.0.0.1, which a real
    server refuses (422): only for simulated instances that listen on loopback.

    ``requests`` counts handled requests by ``"METHOD /path/{namespace}/.../{name}"``, with
    ``WATCH`` as the method for watch requests, e.g.
    ``sim.requests["PUT /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]``;
    ``GET /_sim/stats`` answers them as JSON.
    """

    def __init__(
        self,
        *,
        history: int = 1000,
        bookmark_interval: float = 5.0,
        watch_buffer: int = 1000,
        kubelet_ca_pem: bytes | None = None,
        csr_lifetime: float = 365 * 86400.0,
        allow_loopback_endpoints: bool = False,
    ) -> None:
        self.store = Store(
            history=history,
            watch_buffer=watch_buffer,
            allow_loopback_endpoints=allow_loopback_endpoints,
        )
        self.node_api = NodeApi(
            self.store, kubelet_ca_pem=kubelet_ca_pem, csr_lifetime=csr_lifetime
        )
        """Proxying to kubelets, CSRs and reviews; its ``ca`` is the cluster CA, ``add_token``
        and ``grant`` script the review policy, ``decide`` approves or denies a CSR."""
        self.controllers = Controllers(self.store)
        self.bookmark_interval = bookmark_interval
        self.requests: collections.Counter[str] = collections.Counter()
        self.url = ""
        for namespace in PRE_CREATED_NAMESPACES:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    # ----- serving -----------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP on ``host:port`` until cancelled; reports the URL once listening."""
        await self.node_api.open()
        try:
            async with trio.open_nursery() as nursery:
                self.url = await nursery.start(
                    functools.partial(serve_http, self.handle, host=host, port=port)
                )
                nursery.start_soon(self.controllers.run)
                task_status.started(self.url)
        finally:
            with trio.CancelScope(shield=True):
                await self.node_api.aclose()

    def kubeconfig(self) -> Obj:
        """A kubeconfig for ``self.url``: plain http, a dummy bearer token (never checked),
        and the cluster CA (what a node trusts for the API server's kubelet-client cert)."""
        ca_data = base64.b64encode(self.node_api.ca.cert_pem).decode()
        cluster = {"server": self.url, "certificate-authority-data": ca_data}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": cluster}],
            "users": [{"name": CONTEXT, "user": {"token": "vk-trio-sim"}}],
            "contexts": [
                {
                    "name": CONTEXT,
                    "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"},
                }
            ],
            "current-context": CONTEXT,
        }

    def write_kubeconfig(self, path: str | Path) -> None:
        """Write ``kubeconfig()`` as YAML to ``path`` (call after ``serve`` has started)."""
        Path(path).write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))

    # ----- in-process helpers for tests --------------------------------------------------

    def create(self, obj: Obj) -> Obj:
        """Create ``obj`` (its ``kind`` picks the resource; namespace defaults to "default")."""
        resource = resource_of_kind(obj.get("kind", ""))
        namespace = (obj.get("metadata") or {}).get("namespace", "default")
        return copy.deepcopy(self.store.create(resource, namespace, obj))

    def get(self, kind_plural: str, namespace: str | None, name: str) -> Obj | None:
        """A copy of the object, or None when it does not exist."""
        try:
            return copy.deepcopy(self.store.get(BY_PLURAL[kind_plural], namespace, name))
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(self, kind_plural: str, namespace: str | None = None) -> list[Obj]:
        """Copies of every object of that kind (in ``namespace``, or all namespaces)."""
        return copy.deepcopy(self.store.list(BY_PLURAL[kind_plural], namespace))

    def patch(
        self,
        kind_plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = "application/merge-patch+json",
        subresource: str | None = None,
    ) -> Obj:
        """PATCH as over HTTP (raises ``ApiError``), e.g. to play the scheduler in a test."""
        resource = BY_PLURAL[kind_plural]
        result = self.store.patch(
            resource, namespace, name, content_type, patch, subresource=subresource
        )
        return copy.deepcopy(result)

    def delete(
        self,
        kind_plural: str,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        uid: str | None = None,
    ) -> Obj:
        """DELETE as over HTTP: a bound pod only gets a deletionTimestamp unless grace is 0.
        Returns the object's last state; raises ``ApiError`` (404, 409 on ``uid`` mismatch)."""
        resource = BY_PLURAL[kind_plural]
        result = self.store.delete(resource, namespace, name, grace_seconds=grace_seconds, uid=uid)
        return copy.deepcopy(result)

    def bind(self, namespace: str, name: str, node: str) -> Obj:
        """POST ``pods/{name}/binding`` in process, as a scheduler does: ``spec.nodeName`` and
        ``PodScheduled=True`` (raises ``ApiError`` 409 for a bound or deleted pod)."""
        return copy.deepcopy(self.store.bind(namespace, name, node))

    def compact(self) -> None:
        """Drop the watch history: a watch from any older resourceVersion gets 410 Expired."""
        self.store.compact()

    def close_watches(self) -> None:
        """End every open watch stream, as an API server restart would."""
        self.store.close_watches()

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion (the one a LIST now would return)."""
        return str(self.store.rv)

    @property
    def watchers(self) -> int:
        """Number of open watch streams. A client that vanished while its watch was idle still
        counts until the next event, bookmark or ``timeoutSeconds`` (writing is how the server
        notices, as with a real API server)."""
        return self.store.watchers

    async def wait_until(self, predicate: Predicate) -> None:
        """Return once ``predicate`` holds; it is re-checked after every write and request.

        ``predicate`` takes the sim (``lambda s: s.get(...)``) or nothing. Bound it with
        ``trio.fail_after`` in tests; this never polls on a timer.
        """
        takes_sim = bool(inspect.signature(predicate).parameters)
        while not (predicate(self) if takes_sim else predicate()):  # type: ignore[call-arg]
            await self.store.changed()

    # ----- HTTP --------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """The HTTP handler: discovery, then resources; API errors become ``Status`` bodies."""
        if request.path == "/_sim/stats":  # for `vk-trio bench`; not an API request
            return Response.json(dict(self.requests))
        target = parse_target(request.path)
        is_watch = truthy(request.param("watch"))
        method = "WATCH" if is_watch else request.method
        self.requests[f"{method} {target.template if target else request.path}"] += 1
        try:
            if (answer := await self.node_api.handle(request)) is not None:
                return answer
            if target is None:
                return discovery_response(request.path)
            return self._handle_resource(request, target, is_watch=is_watch)
        except ApiError as error:
            return Response.json(error.status(), error.code)
        except (msgspec.DecodeError, SelectorError, ValueError) as error:
            return Response.json(ApiError(400, "BadRequest", str(error)).status(), 400)
        finally:
            self.store.notify()

    def _handle_resource(self, request: Request, target: Target, *, is_watch: bool) -> Response:
        if target.subresource == "binding" and target.resource.kind == "Pod":
            return self._bind(request, target)
        if target.subresource == "scale" and target.resource.kind in SCALABLE:
            return self._scale(request, target)
        if target.subresource not in (None, "status", *subresources(target.resource)) or (
            target.subresource == "status" and not target.resource.has_status
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        if method in ("GET", "HEAD") and is_watch and target.subresource is None:
            return self._watch(request, target)
        if method in ("GET", "HEAD") and target.name is None:
            return self._list(request, target)
        if method == "POST" and target.name is None and target.subresource is None:
            body = json_body(request)
            warnings = field_warnings(request, target.resource, body)
            created = self.store.create(target.resource, target.namespace, body)
            return self._object_response(request, target.resource, created, 201, warnings)
        if target.name is None:
            raise method_not_allowed()
        return self._handle_object(request, target, target.name)

    def _handle_object(self, request: Request, target: Target, name: str) -> Response:
        resource, namespace, sub = target.resource, target.namespace, target.subresource
        if request.method in ("GET", "HEAD"):
            return self._object_response(
                request, resource, self.store.get(resource, namespace, name)
            )
        if request.method == "PUT":
            body = json_body(request)
            warnings = field_warnings(request, resource, body)
            result = self.store.update(resource, namespace, name, body, subresource=sub)
            return self._object_response(request, resource, result, 200, warnings)
        if request.method == "PATCH":
            content_type = request.headers.get("content-type", "")
            patch = request.json()
            warnings = field_warnings(request, resource, patch)
            result = self.store.patch(
                resource, namespace, name, content_type, patch, subresource=sub
            )
            return self._object_response(request, resource, result, 200, warnings)
        if request.method == "DELETE" and sub is None:
            return self._delete(request, target, name)
        raise method_not_allowed()

    def _bind(self, request: Request, target: Target) -> Response:
        """POST ``pods/{name}/binding`` (what a scheduler sends): a ``Binding`` naming the node."""
        if request.method != "POST":
            raise method_not_allowed()
        binding = json_body(request)
        meta, node = binding.get("metadata") or {}, binding.get("target") or {}
        if meta.get("name", target.name) != target.name:
            raise ApiError(400, "BadRequest", "name in URL does not match name in Binding")
        if node.get("kind", "Node") not in ("", "Node") or not node.get("name"):
            why = "target: Invalid value: a Binding's target must be a Node, named"
            raise ApiError(422, "Invalid", f'Binding "{target.name}" is invalid: {why}')
        assert target.namespace is not None and target.name is not None  # a pod URL
        self.store.bind(target.namespace, target.name, node["name"], uid=meta.get("uid"))
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return Response.json({**status, "code": 201}, 201)

    def _scale(self, request: Request, target: Target) -> Response:
        """``{deployments,replicasets}/{name}/scale`` (``kubectl scale``): an autoscaling/v1
        ``Scale`` view of ``spec.replicas``; a write changes only that."""
        resource, namespace, name = target.resource, target.namespace, target.name
        assert name is not None  # an object URL
        current = scale_of(self.store.get(resource, namespace, name))
        if request.method in ("PUT", "PATCH"):
            content_type = request.headers.get("content-type", "")
            wanted = (
                json_body(request)
                if request.method == "PUT"
                else patched_view(current, content_type, request.json())
            )
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                why = f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer"
                raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: {why}')
            patch = {"spec": {"replicas": replicas}}
            self.store.patch(resource, namespace, name, "application/merge-patch+json", patch)
        elif request.method not in ("GET", "HEAD"):
            raise method_not_allowed()
        return Response.json(scale_of(self.store.get(resource, namespace, name)))

    def _delete(self, request: Request, target: Target, name: str) -> Response:
        options = json_body(request) if request.body else {}
        grace = options.get("gracePeriodSeconds", request.param("gracePeriodSeconds"))
        preconditions = options.get("preconditions") or {}
        propagation = options.get("propagationPolicy", request.param("propagationPolicy"))
        if propagation is None and options.get("orphanDependents") is True:
            propagation = "Orphan"  # the deprecated spelling
        if propagation not in (None, *PROPAGATION_FINALIZERS):
            why = f"propagationPolicy: Unsupported value: {propagation!r}"
            raise ApiError(422, "Invalid", f'DeleteOptions "{name}" is invalid: {why}')
        result = self.store.delete(
            target.resource,
            target.namespace,
            name,
            grace_seconds=int(grace) if grace is not None else None,
            uid=preconditions.get("uid"),
            resource_version=preconditions.get("resourceVersion"),
            propagation=propagation,
        )
        return self._object_response(request, target.resource, result)

    def _object_response(
        self,
        request: Request,
        resource: Resource,
        obj: Obj,
        status: int = 200,
        warnings: Sequence[str] = (),
    ) -> Response:
        """``obj`` as JSON or as a Table; each warning becomes a ``Warning`` header, which
        kubectl prints as ``Warning: ...`` (the real server's RFC 7234 form: code 299)."""
        headers = [("Warning", f"299 - {json.dumps(w)}") for w in warnings]
        if wants_table(request):
            include = request.param("includeObject", "Metadata") or "Metadata"
            rv = obj["metadata"]["resourceVersion"]
            table = kube_table.table(resource, [obj], include_object=include, rv=rv)
            return Response.json(table, status, headers=headers)
        return Response.json(obj, status, headers=headers)

    def _list(self, request: Request, target: Target) -> Response:
        matches = request_matcher(request)
        items = self.store.list(target.resource, target.namespace, matches)
        rv = str(self.store.rv)
        items, next_token = paginate(items, request)
        if wants_table(request):
            include = request.param("includeObject", "Metadata") or "Metadata"
            table = kube_table.table(target.resource, items, include_object=include, rv=rv)
            if next_token:
                table["metadata"]["continue"] = next_token
            return Response.json(table)
        metadata = {"resourceVersion": rv}
        if next_token:
            metadata["continue"] = next_token
        resource = target.resource
        # Like the real server, list items carry no kind/apiVersion (watch objects do).
        bare = [
            {k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items
        ]
        return Response.json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": metadata,
                "items": bare,
            }
        )

    def _watch(self, request: Request, target: Target) -> Response:
        """A watch stream; ``sendInitialEvents=true`` (the "streaming list") starts, like an
        unset or "0" ``resourceVersion``, with synthetic ADDEDs, then marks their end with a
        bookmark annotated ``k8s.io/initial-events-end``."""
        send_initial = truthy(request.param("sendInitialEvents"))
        since_text = request.param("resourceVersion", "") or "0"
        since = None if send_initial or since_text == "0" else int(since_text)
        headers = [("Content-Type", "application/json")]
        try:
            matches = request_matcher(request, name=target.name)
            watcher = self.store.watch(target.resource, target.namespace, matches, since)
        except Expired as expired:
            error = ApiError(410, "Expired", str(expired)).status()
            return Response(headers=headers, stream=one_event_stream("ERROR", error))
        timeout = float(request.param("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        bookmarks = truthy(request.param("allowWatchBookmarks")) and not wants_table(request)
        stream = self._watch_stream(
            watcher,
            deadline=trio.current_time() + timeout,
            bookmarks=bookmarks,
            initial_end=send_initial,
            encode=self._event_encoder(request, target.resource),
        )
        return Response(headers=headers, stream=stream)

    def _event_encoder(self, request: Request, resource: Resource) -> Callable[[str, Obj], bytes]:
        if not wants_table(request):
            return encode_event
        include = request.param("includeObject", "Metadata") or "Metadata"

        def encode(kind: str, obj: Obj) -> bytes:
            rv = obj["metadata"]["resourceVersion"]
            return encode_event(
                kind, kube_table.table(resource, [obj], include_object=include, rv=rv)
            )

        return encode

    async def _watch_stream(
        self,
        watcher: Watcher,
        *,
        deadline: float,
        bookmarks: bool,
        initial_end: bool,
        encode: Callable[[str, Obj], bytes],
    ) -> AsyncIterator[bytes]:
        """The chunks of one watch: owed events, then live ones, bookmarks while idle.

        Ends at ``deadline``, when the store closes the watcher (``close_watches``, or the
        buffer overflowed), or when the client goes away (the server then closes this
        generator); the watcher is always unregistered. Never yields inside a cancel scope.
        """
        try:
            for kind, obj in watcher.initial:
                yield encode(kind, obj)
            watcher.initial = []
            if initial_end:
                yield bookmark_event(watcher.resource, watcher.start_rv, initial_events_end=True)
            next_bookmark = trio.current_time() + self.bookmark_interval
            while trio.current_time() < deadline:
                event = None
                with trio.move_on_at(min(deadline, next_bookmark if bookmarks else math.inf)):
                    try:
                        event = await watcher.receive.receive()
                    except trio.EndOfChannel:
                        return
                if event is not None:
                    chunk, ended = _batch(watcher, event, encode)
                    yield chunk
                    if ended:
                        return
                elif bookmarks and trio.current_time() >= next_bookmark:
                    next_bookmark = trio.current_time() + self.bookmark_interval
                    yield bookmark_event(watcher.resource, self.store.rv)
        finally:
            self.store.unwatch(watcher)


def _batch(
    watcher: Watcher, first: tuple[str, Obj], encode: Callable[[str, Obj], bytes]
) -> tuple[bytes, bool]:
    """``first`` and the events already queued behind it (up to ``WATCH_BATCH``) as one chunk,
    and whether the store closed the watcher meanwhile.

    The apiserver flushes only when no other event is queued for the watcher (``serveWatch``):
    events that came together leave together.
    """
    chunks = [encode(*first)]
    while len(chunks) < WATCH_BATCH:
        try:
            chunks.append(encode(*watcher.receive.receive_nowait()))
        except trio.WouldBlock:
            return b"".join(chunks), False
        except trio.EndOfChannel:
            return b"".join(chunks), True
    return b"".join(chunks), False
