"""What the stand-in does for the kubelet API: proxying to nodes, CSRs, token and access reviews.

Like a real API server, the stand-in

* proxies ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` (its query passed on) to
  ``/containerLogs/{ns}/{name}/{container}`` and ``/api/v1/nodes/{name}/proxy/{path}`` to
  ``/{path}`` on the node's kubelet endpoint (``status.addresses`` InternalIP and
  ``status.daemonEndpoints.kubeletEndpoint.Port``), over HTTPS with its kubelet-client
  certificate, verifying the kubelet's serving certificate against its CA (and
  ``kubelet_ca_pem`` when a test brings its own); a non-2xx answer to a log request becomes a
  ``Status`` with the kubelet's text as message, as ``NewGenericServerResponse`` does;
* proxies ``pods/{name}/exec``, ``/attach`` (to ``/{exec,attach}/{ns}/{name}/{container}``)
  and ``/portforward`` (to ``/portForward/{ns}/{name}``), checking the container first and
  turning the query into the kubelet's (``input``/``output``/``error``/``tty`` = ``1``,
  ``command`` repeated, ``ports`` → ``port``) as ``streamLocation`` and ``streamParams`` do.
  A SPDY upgrade is proxied as the real ``UpgradeAwareProxy`` does (``upgrade_proxy``: the
  kubelet's 101 relayed, then the connections spliced); a request without one is proxied
  like any other. A WebSocket upgrade is proxied the same way, as a 1.36 API server does,
  when the pod's Node declares ``ExtendWebSocketsToKubelet`` in ``status.declaredFeatures``
  (``checkNodeSupportsWebsockets``); to any other node it is told no (400) and kubectl falls
  back to SPDY. (A real 1.30-1.35 server, or a 1.36 one for such a node, instead translates
  kubectl's v5 WebSocket to SPDY towards the kubelet, and tunnels port-forward; the stand-in
  leaves that to kubectl's fallback.)
* serves ``PUT .../certificatesigningrequests/{name}/approval`` (``kubectl certificate
  approve|deny``) and signs approved ``kubernetes.io/kubelet-serving`` CSRs with its CA, like
  kube-controller-manager's signer (a CSR that breaks the signer's rules gets ``Failed``);
* answers ``TokenReview`` from a token table and ``SubjectAccessReview`` from a small policy:
  members of ``system:masters`` may do anything, others what ``grant`` gave them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import ssl
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec
import trio

from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, Obj, timestamp
from vk_trio.devtools.sim.kube.pki import (
    APISERVER_CLIENT_GROUP,
    APISERVER_CLIENT_USER,
    ClusterCA,
    SigningRefused,
)
from vk_trio.devtools.sim.kube.store import ApiError
from vk_trio.devtools.sim.kube.upgrade_proxy import proxy_upgrade
from vk_trio.http_server import Request, Response
from vk_trio.kubelet.streaming.declared_features import (
    DECLARED_FEATURES_FIELD,
    EXTEND_WEBSOCKETS_TO_KUBELET,
)

if TYPE_CHECKING:
    from vk_trio.devtools.sim.kube.store import Store

KUBELET_SERVING = "kubernetes.io/kubelet-serving"
_LOG_PARAMS = ("follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines")
_LOG_PARAMS_ALL = (*_LOG_PARAMS, "limitBytes")
_STREAMS = frozenset({"exec", "attach", "portforward"})
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


def _status(code: int, message: str, reason: str | None = None) -> Response:
    return Response.json(
        ApiError(code, reason or _REASONS.get(code, "InternalError"), message).status(), code
    )


class NodeApi:
    """The routes in the module docstring, for one stand-in's ``store``."""

    def __init__(self, store: Store, *, kubelet_ca_pem: bytes | None, csr_lifetime: float) -> None:
        self._store = store
        self.ca = ClusterCA()
        self.kubelet_ca_pem = kubelet_ca_pem
        self.csr_lifetime = csr_lifetime
        self.tokens: dict[str, Obj] = {}
        """Bearer token → ``UserInfo`` (``username``, ``groups``) for TokenReview."""
        self.grants: set[tuple[str, str, str]] = set()
        """(user, verb, "nodes/<subresource>") allowed to users outside system:masters."""
        self.reviews: list[Obj] = []
        """Every SubjectAccessReview spec received, in order (tests read it)."""
        self.upgrades: list[str] = []
        """The ``Upgrade`` header of every streaming request proxied to a kubelet, in order
        (``SPDY/3.1``, ``websocket``): tests read which transport kubectl really used."""
        self._http: httpx.AsyncClient | None = None
        self._context: ssl.SSLContext | None = None

    def add_token(self, token: str, username: str, groups: tuple[str, ...] = ()) -> None:
        self.tokens[token] = {"username": username, "groups": [*groups, "system:authenticated"]}

    def grant(self, user: str, verb: str, resource: str) -> None:
        """Let ``user`` do ``verb`` on ``resource`` (e.g. ``"nodes/proxy"``)."""
        self.grants.add((user, verb, resource))

    # ----- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Build the kubelet client (certificate files are read once, in a worker thread)."""
        context = self._context = await trio.to_thread.run_sync(self._client_context)
        self._http = httpx.AsyncClient(verify=context, timeout=httpx.Timeout(30.0, read=None))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _client_context(self) -> ssl.SSLContext:
        client = self.ca.client_certificate(APISERVER_CLIENT_USER, APISERVER_CLIENT_GROUP)
        context = ssl.create_default_context(
            cadata=(self.ca.cert_pem + (self.kubelet_ca_pem or b"")).decode()
        )
        with tempfile.TemporaryDirectory(prefix="vk-trio-sim-") as directory:
            cert, key = Path(directory, "client.crt"), Path(directory, "client.key")
            cert.write_bytes(client.cert_pem)
            key.write_bytes(client.key_pem)
            context.load_cert_chain(cert, key)
        return context

    # ----- routing ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | None:
        """The answer when ``request`` is one of ours, else None (the resource routes)."""
        parts = [p for p in request.path.split("/") if p]
        if request.method == "POST" and parts == [
            "apis",
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
        ]:
            return self._token_review(request)
        if request.method == "POST" and parts == [
            "apis",
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
        ]:
            return self._access_review(request)
        if (
            len(parts) == 6
            and parts[:3] == ["apis", "certificates.k8s.io", "v1"]
            and parts[3] == "certificatesigningrequests"
            and parts[5] == "approval"
            and request.method == "PUT"
        ):
            return self._approval(parts[4], _approval_body(request))
        is_log = len(parts) == 7 and parts[4] == "pods" and parts[6] == "log"
        if is_log and parts[:3] == ["api", "v1", "namespaces"] and request.method == "GET":
            return await self._pod_log(request, parts[3], parts[5])
        is_stream = len(parts) == 7 and parts[4] == "pods" and parts[6] in _STREAMS
        if is_stream and parts[:3] == ["api", "v1", "namespaces"]:
            return await self._pod_stream(request, parts[3], parts[5], parts[6])
        if len(parts) >= 5 and parts[:3] == ["api", "v1", "nodes"] and parts[4] == "proxy":
            path = "/" + "/".join(parts[5:])
            return await self._proxy(request, parts[3], path, request.query, logs=False)
        return None

    # ----- reviews ---------------------------------------------------------------------

    def _token_review(self, request: Request) -> Response:
        review = request.json() or {}
        user = self.tokens.get(str((review.get("spec") or {}).get("token") or ""))
        status: Obj = {"authenticated": user is not None}
        if user is not None:
            status["user"] = user
        return Response.json({**review, "status": status}, 201)

    def _access_review(self, request: Request) -> Response:
        review = request.json() or {}
        spec = review.get("spec") or {}
        self.reviews.append(spec)
        attributes = spec.get("resourceAttributes") or {}
        resource = attributes.get("resource", "")
        if attributes.get("subresource"):
            resource += "/" + attributes["subresource"]
        allowed = APISERVER_CLIENT_GROUP in (spec.get("groups") or []) or (
            (spec.get("user"), attributes.get("verb"), resource) in self.grants
        )
        status: Obj = {"allowed": allowed}
        if not allowed:
            status["reason"] = f"{spec.get('user')} may not {attributes.get('verb')} {resource}"
        return Response.json({**review, "status": status}, 201)

    # ----- certificate signing -----------------------------------------------------------

    def _approval(self, name: str, body: Obj) -> Response:
        resource = BY_PLURAL["certificatesigningrequests"]
        old = self._store.get(resource, None, name)
        conditions = (body.get("status") or {}).get("conditions") or []
        status = {**(old.get("status") or {}), "conditions": conditions}
        meta = {"resourceVersion": (body.get("metadata") or {}).get("resourceVersion")}
        stored = self._store.update(
            resource, None, name, {"metadata": meta, "status": status}, subresource="status"
        )
        return Response.json(self._sign_if_approved(stored))

    def _sign_if_approved(self, csr: Obj) -> Obj:
        status = csr.get("status") or {}
        kinds = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        spec = csr.get("spec") or {}
        if (
            "Approved" not in kinds
            or kinds & {"Denied", "Failed"}
            or status.get("certificate")
            or spec.get("signerName") != KUBELET_SERVING
        ):
            return csr
        seconds = spec.get("expirationSeconds") or self.csr_lifetime
        try:
            issued = self.ca.sign_kubelet_serving(
                base64.b64decode(spec.get("request") or ""), _dt.timedelta(seconds=seconds)
            )
            status = {**status, "certificate": base64.b64encode(issued).decode()}
        except SigningRefused as exc:
            failed = {
                "type": "Failed",
                "status": "True",
                "reason": "SignerValidationFailure",
                "message": str(exc),
                "lastUpdateTime": timestamp(),
                "lastTransitionTime": timestamp(),
            }
            status = {**status, "conditions": [*status.get("conditions", []), failed]}
        resource = BY_PLURAL["certificatesigningrequests"]
        return self._store.update(
            resource, None, csr["metadata"]["name"], {"status": status}, subresource="status"
        )

    def decide(self, name: str, *, approve: bool, message: str = "") -> Obj:
        """Approve or deny a CSR in-process, as ``kubectl certificate approve|deny`` does."""
        condition = {
            "type": "Approved" if approve else "Denied",
            "status": "True",
            "reason": "KubectlApprove" if approve else "KubectlDeny",
            "message": message or f"This CSR was {'approved' if approve else 'denied'} by a test.",
            "lastUpdateTime": timestamp(),
        }
        resource = BY_PLURAL["certificatesigningrequests"]
        old = self._store.get(resource, None, name)
        conditions = [*(old.get("status") or {}).get("conditions", []), condition]
        response = self._approval(name, {"status": {"conditions": conditions}})
        decided: Obj = msgspec.json.decode(response.body)
        return decided

    # ----- proxying ----------------------------------------------------------------------

    async def _pod_log(self, request: Request, namespace: str, name: str) -> Response:
        pod = self._store.get(BY_PLURAL["pods"], namespace, name)
        containers = _container_names(pod, ephemeral=False)
        container = request.param("container") or ""
        if not container:
            if len(containers) != 1:
                return _status(
                    400,
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(containers)}]",
                )
            container = containers[0]
        elif container not in _container_names(pod):
            return _status(400, f"container {container} is not valid for pod {name}")
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return _status(400, f"pod {name} does not have a host assigned")
        query = {k: v for k, v in request.query.items() if k in _LOG_PARAMS_ALL}
        path = f"/containerLogs/{namespace}/{name}/{container}"
        return await self._proxy(request, node, path, query, logs=True)

    async def _pod_stream(self, request: Request, namespace: str, name: str, verb: str) -> Response:
        """``pods/{name}/{exec,attach,portforward}``, as ``streamLocation`` resolves them."""
        if request.method not in ("GET", "POST"):
            return _status(405, f"{request.method} is not allowed", "MethodNotAllowed")
        pod = self._store.get(BY_PLURAL["pods"], namespace, name)
        node = (pod.get("spec") or {}).get("nodeName")
        websocket = "websocket" in request.headers.get("upgrade", "").lower()
        if websocket and not (node and self._proxies_websocket(node)):
            # What a server without the stream translator answers; kubectl then uses SPDY.
            return _status(400, "WebSocket upgrades are not served by this stand-in")
        if verb == "portforward":
            path = f"/portForward/{namespace}/{name}"
        else:
            container = request.param("container") or ""
            names = _container_names(pod)
            if not container:
                if len(names) != 1:
                    return _status(
                        400,
                        f"a container name must be specified for pod {name}, "
                        f"choose one of: [{' '.join(names)}]",
                    )
                container = names[0]
            elif container not in names:
                return _status(400, f"container {container} is not valid for pod {name}")
            path = f"/{verb}/{namespace}/{name}/{container}"
        if not node:
            return _status(400, f"pod {name} does not have a host assigned")
        query = _kubelet_stream_query(request, verb)
        if "upgrade" in request.headers.get("connection", "").lower():
            return await self._upgrade(request, node, path, query)
        return await self._proxy(request, node, path, query, logs=False)

    async def _upgrade(
        self, request: Request, node_name: str, path: str, query: dict[str, list[str]]
    ) -> Response:
        located = self._kubelet(node_name)
        if isinstance(located, Response):
            return located
        host, port = located
        target = urllib.parse.quote(path)
        if query:
            target += "?" + urllib.parse.urlencode(query, doseq=True)
        assert self._context is not None, "NodeApi.open() was not called"
        self.upgrades.append(request.headers.get("upgrade", ""))
        try:
            return await proxy_upgrade(request, host, port, target, self._context)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError) as exc:
            return _status(500, f"error dialing backend: {exc}", "InternalError")

    def _proxies_websocket(self, node_name: str) -> bool:
        """Whether the node's kubelet takes WebSocket itself (its declared features)."""
        try:
            node = self._store.get(BY_PLURAL["nodes"], None, node_name)
        except ApiError:
            return False
        declared = (node.get("status") or {}).get(DECLARED_FEATURES_FIELD) or []
        return EXTEND_WEBSOCKETS_TO_KUBELET in declared

    def _kubelet(self, node_name: str) -> tuple[str, int] | Response:
        """The node's kubelet address and port, or the answer when it has none."""
        node = self._store.get(BY_PLURAL["nodes"], None, node_name)
        status = node.get("status") or {}
        address = next(
            (a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
            None,
        )
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not port:
            return _status(400, f"node {node_name} has no InternalIP or kubelet port")
        return address, int(port)

    async def _proxy(
        self,
        request: Request,
        node_name: str,
        path: str,
        query: dict[str, list[str]],
        *,
        logs: bool,
    ) -> Response:
        located = self._kubelet(node_name)
        if isinstance(located, Response):
            return located
        address, port = located
        host = f"[{address}]" if ":" in address else address
        url = f"https://{host}:{port}{urllib.parse.quote(path)}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        assert self._http is not None, "NodeApi.open() was not called"
        headers = {k: v for k, v in request.headers.items() if k in ("accept", "content-type")}
        outgoing = self._http.build_request(
            request.method, url, content=request.body or None, headers=headers
        )
        try:
            response = await self._http.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            return _status(500, f'Get "{url}": {type(exc).__name__}: {exc}', "InternalError")
        if logs and not response.is_success:
            text = (await response.aread()).decode(errors="replace").strip()
            await response.aclose()
            return _status(response.status_code, text)
        content_type = response.headers.get("content-type", "text/plain")
        follow = logs and (request.param("follow") or "").lower() in ("1", "t", "true")
        return Response(
            status=response.status_code,
            headers=[("Content-Type", content_type)],
            stream=_relay(response),
            until_disconnect=follow,
        )


_TRUE = ("1", "t", "T", "true", "True", "TRUE")
_STREAM_FLAGS = (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty"))


def _kubelet_stream_query(request: Request, verb: str) -> dict[str, list[str]]:
    """The API's Pod{Exec,Attach,PortForward}Options query as the kubelet's (``streamParams``)."""
    query: dict[str, list[str]] = {}
    if verb == "portforward":
        ports = [p for value in request.query.get("ports", []) for p in value.split(",") if p]
        return {"port": [",".join(ports)]} if ports else {}
    for api_name, kubelet_name in _STREAM_FLAGS:
        if (request.param(api_name) or "") in _TRUE:
            query[kubelet_name] = ["1"]
    if verb == "exec" and request.query.get("command"):
        query["command"] = request.query["command"]
    return query


def _container_names(pod: Obj, *, ephemeral: bool = True) -> list[str]:
    """The pod's container names: regular ones, then init and (``ephemeral``) ephemeral
    ones, which a request naming its container may also reach (``podHasContainerWithName``)."""
    spec = pod.get("spec") or {}
    kinds = (
        ("containers", "initContainers", "ephemeralContainers") if ephemeral else ("containers",)
    )
    return [c["name"] for kind in kinds for c in spec.get(kind) or []]


def _approval_body(request: Request) -> Obj:
    """The approval PUT's body: JSON, or the protobuf kubectl's typed client sends."""
    if not request.body.startswith(_PROTOBUF_MAGIC):
        body: Obj = request.json() or {}
        return body
    unknown = _fields(request.body[len(_PROTOBUF_MAGIC) :])
    csr = _fields(unknown.get(2, [b""])[0])  # runtime.Unknown.raw
    meta = _fields(csr.get(1, [b""])[0])
    status = _fields(csr.get(3, [b""])[0])
    conditions = []
    for raw in status.get(1, []):
        condition = _fields(raw)
        names = {1: "type", 2: "reason", 3: "message", 6: "status"}
        conditions.append({k: condition[n][0].decode() for n, k in names.items() if n in condition})
    version = meta.get(6, [b""])[0].decode()
    return {"metadata": {"resourceVersion": version}, "status": {"conditions": conditions}}


_PROTOBUF_MAGIC = b"k8s\x00"


def _fields(data: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of one protobuf message, by field number (varints and
    fixed-width fields are skipped: the approval needs strings and sub-messages only)."""
    found: dict[int, list[bytes]] = {}
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            size = varint()
            found.setdefault(number, []).append(data[at : at + size])
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return found


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    """The kubelet's body, chunk by chunk; closing this generator closes the upstream."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        return
    finally:
        await response.aclose()
