"""Discovery: ``/version``, ``/api``, ``/apis`` and the resource lists kubectl reads first."""

from __future__ import annotations

from vk_trio.devtools.sim.kube import openapi as kube_openapi
from vk_trio.devtools.sim.kube.kinds import RESOURCES, VERBS, Obj
from vk_trio.devtools.sim.kube.store import ApiError
from vk_trio.devtools.sim.kube.wire import SCALABLE
from vk_trio.http_server import Response

SERVER_VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0-vk-trio-sim"}


def discovery_response(path: str) -> Response:
    """``/version``, ``/api``, ``/apis``, group and resource lists, OpenAPI v3
    (``openapi``); 404 for everything else (``/openapi/v2`` included)."""
    path = path.rstrip("/") or "/"
    for answer in (_openapi, _server_info, _api_groups):
        response = answer(path)
        if response is not None:
            return response
    error = ApiError(404, "NotFound", "the server could not find the requested resource")
    return Response.json(error.status(), 404)


def _openapi(path: str) -> Response | None:
    """The OpenAPI v3 index and its per-group documents (kubectl's ``explain`` and
    client-side validation read them)."""
    if path == "/openapi/v3":
        return Response(body=kube_openapi.index(), headers=[("Content-Type", "application/json")])
    if path.startswith("/openapi/v3/") and path[len("/openapi/v3/") :] in kube_openapi.documents():
        body = kube_openapi.documents()[path[len("/openapi/v3/") :]]
        return Response(body=body, headers=[("Content-Type", "application/json")])
    return None


def _server_info(path: str) -> Response | None:
    """``/version``, the health endpoints and ``/api``: what a client asks before any kind."""
    if path == "/version":
        return Response.json({**SERVER_VERSION, "platform": "linux/amd64"})
    if path in ("/healthz", "/readyz", "/livez"):
        return Response.text("ok")
    if path == "/api":
        return Response.json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                ],
            }
        )
    return None


def _api_groups(path: str) -> Response | None:
    """``/apis``, each group, and the resource lists of the core and named groups."""
    groups = sorted({r.group for r in RESOURCES if r.group})
    if path == "/apis":
        return Response.json(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in groups]}
        )
    for group in groups:
        if path == f"/apis/{group}":
            return Response.json({"kind": "APIGroup", "apiVersion": "v1", **_group(group)})
        if path == f"/apis/{group}/v1":
            return Response.json(_resource_list(group))
    if path == "/api/v1":
        return Response.json(_resource_list(""))
    return None


def _group(group: str) -> Obj:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [version], "preferredVersion": version}


def _resource_list(group: str) -> Obj:
    resources: list[Obj] = []
    for r in RESOURCES:
        if r.group != group:
            continue
        entry = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        if r.kind in SCALABLE:
            resources.append(
                {
                    "name": f"{r.plural}/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if r.kind == "Pod":
            resources.append(
                {
                    "name": "pods/binding",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Binding",
                    "verbs": ["create"],
                }
            )
        if r.has_status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    group_version = f"{group}/v1" if group else "v1"
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
