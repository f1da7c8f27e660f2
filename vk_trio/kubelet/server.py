"""The kubelet HTTPS API (port 10250): the paths the API server proxies ``kubectl`` to.

Routes, after ``auth`` has let the request through (nothing is served unauthenticated):

- ``GET /containerLogs/{namespace}/{pod}/{container}``: ``kubectl logs``; the query is parsed
  and validated like the kubelet's (``tailLines`` >= 0, ``limitBytes`` >= 1, ``sinceSeconds``
  >= 1, ``sinceTime`` RFC 3339 and not with ``sinceSeconds``, booleans as Go's ``ParseBool``).
  The body is chunked ``text/plain``; with ``follow`` it stays open until the container ends
  or the client hangs up. The node (``PodLookup``) says which pod and container are meant and
  answers for a container that does not run; the provider streams the one that does. Their
  ``ContainerError``s become the kubelet's plain-text answers (404, 400 "waiting to start:
  ..."), which the API server relays to ``kubectl``;
- ``GET /stats/summary``: the stats/v1alpha1 Summary; ``GET /metrics/resource``: the same
  as resource metrics, which metrics-server (``kubectl top``) scrapes;
- ``GET /pods``: a PodList of this node's pods; ``GET /healthz``; ``GET /metrics``;
- ``/exec``, ``/attach`` and ``/portForward`` (GET or POST, with or without the pod's UID):
  ``kubectl exec``, ``attach`` and ``port-forward`` over SPDY/3.1, through the provider's
  ``exec``/``attach``/``port_forward`` (``streaming``: the routes, the handshake, the
  transport and the sessions);
- ``/run``: a ``Status`` saying it is not supported on Vast.ai instances (yet), code 501,
  instead of a hang or a 404; the logs of an ephemeral container (``kubectl debug`` reads
  them once its container is terminated, which the node reports at once) are a 400 that
  says the same of ``kubectl debug``.

Everything else is 404, like the kubelet's mux.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.config import Settings
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import ClusterConfig
from vk_trio.kubelet.auth import KubeletAuth
from vk_trio.kubelet.certs import ServingTLS, rotate_serving_certificate
from vk_trio.kubelet.resource_metrics import CONTENT_TYPE as RESOURCE_TYPE
from vk_trio.kubelet.resource_metrics import ResourceMetrics
from vk_trio.kubelet.stats import ContainerUsage, stats_summary
from vk_trio.kubelet.streaming.routes import STREAMING, StreamingRoutes
from vk_trio.metrics import render
from vk_trio.node.lookup import PodLookup
from vk_trio.node.provider import ContainerError, LogOptions, Provider

__all__ = [
    "KubeletServer",
    "cluster_ca_pem",
    "parse_log_options",
    "serve_kubelet",
    "serve_kubelet_api",
]

MetricsSource = Callable[[], tuple[bytes, str]]
"""Returns (Prometheus exposition body, its Content-Type)."""

_UNSUPPORTED = ("run",)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class _BadQuery(ValueError):
    pass


def _bool(request: Request, name: str) -> bool:
    value = request.param(name)
    if value is None or value == "":
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _BadQuery(f"invalid {name}: {value!r} is not a boolean")


def _int(request: Request, name: str, minimum: int) -> int | None:
    value = request.param(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise _BadQuery(f"invalid {name}: {value!r} is not an integer") from None
    if number < minimum:
        raise _BadQuery(f"invalid {name}: must be >= {minimum}")
    return number


def parse_log_options(request: Request) -> LogOptions:
    """The ``containerLogs`` query as ``LogOptions`` (raises ``ValueError`` saying what)."""
    since_time = None
    raw_time = request.param("sinceTime")
    if raw_time:
        try:
            since_time = _dt.datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
        except ValueError:
            raise _BadQuery(f"invalid sinceTime: {raw_time!r} is not RFC 3339") from None
        if since_time.tzinfo is None:
            raise _BadQuery(f"invalid sinceTime: {raw_time!r} has no time zone")
    since_seconds = _int(request, "sinceSeconds", 1)
    if since_time is not None and since_seconds is not None:
        raise _BadQuery("at most one of sinceTime or sinceSeconds may be specified")
    return LogOptions(
        tail_lines=_int(request, "tailLines", 0),
        limit_bytes=_int(request, "limitBytes", 1),
        timestamps=_bool(request, "timestamps"),
        since_seconds=since_seconds,
        since_time=since_time,
        previous=_bool(request, "previous"),
        follow=_bool(request, "follow"),
    )


def _status(code: int, reason: str, message: str) -> Response:
    return Response.json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        code,
    )


class KubeletServer:
    """The request handler: auth first, then the routes in the module docstring."""

    def __init__(
        self,
        pods: PodLookup,
        provider: Provider,
        auth: KubeletAuth,
        *,
        node_name: str,
        metrics: MetricsSource | None = None,
    ) -> None:
        self._pods = pods
        self._provider = provider
        self._auth = auth
        self._node = node_name
        self._metrics = metrics
        self._resource = ResourceMetrics()
        self._streaming = StreamingRoutes(pods, provider)
        self._started = _dt.datetime.now(_dt.UTC)

    async def handle(self, request: Request) -> Response:
        refusal = await self._auth.check(request)
        if refusal is not None:
            return refusal
        parts = [p for p in request.path.split("/") if p]
        if parts and parts[0] in STREAMING:
            return await self._streaming.handle(request, parts)
        if parts and parts[0] in _UNSUPPORTED:
            return _status(
                501, "BadRequest", f"kubectl {parts[0]} is not supported on Vast.ai instances (yet)"
            )
        if request.method not in ("GET", "HEAD"):
            return Response.text("405: Method Not Allowed\n", 405)
        try:
            return await self._get(request, parts)
        except ContainerError as exc:
            return Response.text(str(exc), exc.status)

    async def _get(self, request: Request, parts: list[str]) -> Response:
        if parts == ["healthz"]:
            return Response.text("ok")
        if parts == ["pods"]:
            return self._pod_list()
        if parts == ["stats", "summary"]:
            return Response.json(await self._summary())
        if parts == ["metrics", "resource"]:
            text = self._resource.render(await self._summary())
            return Response(body=text.encode(), headers=[("Content-Type", RESOURCE_TYPE)])
        if parts == ["metrics"] and self._metrics is not None:
            body, content_type = self._metrics()
            return Response(body=body, headers=[("Content-Type", content_type)])
        if len(parts) == 4 and parts[0] == "containerLogs":
            return await self._logs(request, *parts[1:])
        return Response.text("404 page not found\n", 404)

    def _pod_list(self) -> Response:
        items: list[Any] = [
            {"apiVersion": "v1", "kind": "Pod", **msgspec.to_builtins(pod)}
            for pod in self._pods.pods()
        ]
        return Response.json(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        )

    async def _logs(self, request: Request, namespace: str, pod: str, container: str) -> Response:
        try:
            options = parse_log_options(request)
        except _BadQuery as exc:
            return Response.text(str(exc), 400)
        running = self._pods.running(namespace, pod, container)
        stream = await self._provider.logs(running, container, options)
        return Response(
            headers=[("Content-Type", "text/plain")],
            stream=stream,
            until_disconnect=options.follow,
        )

    async def _summary(self) -> dict[str, Any]:
        """The Summary of every placed pod whose running container the provider can measure."""
        measured: list[ContainerUsage] = []
        for pod, container in self._pods.placed():
            usage = await self._provider.usage(pod)
            if usage is not None:
                measured.append((pod, container, usage))
        return stats_summary(self._node, self._started, measured, now=_dt.datetime.now(_dt.UTC))


async def serve_kubelet(
    kube: KubeClient,
    pods: PodLookup,
    provider: Provider,
    *,
    node_name: str,
    addresses: Sequence[str],
    host: str,
    port: int,
    client_ca_pem: bytes | None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    metrics: MetricsSource | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the kubelet API until cancelled; reports its ``https://`` URL once listening.

    The serving certificate comes from the files when both are given, else from the CSR
    rotation (``certs``), which owns its own task here. Nothing is served before a
    certificate is installed.
    """
    tls = ServingTLS(client_ca_pem=client_ca_pem)
    if client_ca_pem is None:
        logger.warning(
            "kubelet api: no cluster CA known; client certificates are not accepted, only "
            "bearer tokens (set --client-ca-file)"
        )
    server = KubeletServer(
        pods,
        provider,
        KubeletAuth(kube, node_name=node_name),
        node_name=node_name,
        metrics=metrics,
    )
    async with trio.open_nursery() as nursery:
        if tls_cert_file and tls_key_file:
            await tls.install_files(tls_cert_file, tls_key_file)
        else:
            await nursery.start(
                functools.partial(
                    rotate_serving_certificate,
                    kube,
                    tls,
                    node_name=node_name,
                    addresses=addresses,
                )
            )
        url = await nursery.start(
            functools.partial(serve_http, server.handle, host=host, port=port, tls=tls.context)
        )
        logger.info("kubelet api listening", url=url, certificate=tls.source)
        task_status.started(url)


async def cluster_ca_pem(cluster: ClusterConfig, override: str | None) -> bytes | None:
    """The CA that client certificates must chain to: ``override`` (``--client-ca-file``),
    else the cluster CA the kubeconfig or service account gave us, else None."""
    path = override or cluster.ca_file
    if path:
        return await trio.Path(path).read_bytes()
    return cluster.ca_data.encode() if cluster.ca_data else None


async def serve_kubelet_api(
    settings: Settings,
    kube: KubeClient,
    cluster: ClusterConfig,
    pods: PodLookup,
    provider: Provider,
    *,
    metrics: MetricsSource = render,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``serve_kubelet`` as the settings say (address, port, certificates, client CA), with
    the node's ``/metrics``."""
    await serve_kubelet(
        kube,
        pods,
        provider,
        node_name=settings.node_name,
        addresses=[settings.pod_ip],
        host=settings.kubelet_host,
        port=settings.kubelet_port,
        client_ca_pem=await cluster_ca_pem(cluster, settings.client_ca_file),
        tls_cert_file=settings.tls_cert_file,
        tls_key_file=settings.tls_private_key_file,
        metrics=metrics,
        task_status=task_status,
    )
