"""The Vast provider's side of the kubelet API (logs, stats), and starting the API.

``VastKubeletBackend`` implements ``vk_trio.kubelet.backend.KubeletBackend`` over what the
node already has: the pods its dispatcher supervises (a callable, so this module does not
reach into the lifecycle), the instance poller's view of each pod's instances, and
``VastClient.request_logs`` (paced on the client's ``request_logs`` lane, so every follower
shares one rate limit). One ``LogBook`` per instance is shared by all readers; when a pod's
instance is replaced, the old book becomes its ``previous`` (at most ``PREVIOUS_LINES``).

``start_kubelet_api`` reads the settings and the cluster CA and runs ``serve_kubelet``.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from vk_trio.config import Settings
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import ClusterConfig
from vk_trio.kube.models import Pod
from vk_trio.kubelet.backend import (
    BackendError,
    KubeletBackend,
    LogOptions,
    NotFound,
    NotReady,
    PodUsage,
    stats_summary,
)
from vk_trio.kubelet.logs import FOLLOW_INTERVAL, LogBook, stream_logs
from vk_trio.kubelet.server import serve_kubelet
from vk_trio.metrics import render
from vk_trio.provider.poller import InstancePoller
from vk_trio.vast import Instance, InstanceNotFound, VastClient, VastError

__all__ = ["VastKubeletBackend", "cluster_ca_pem", "start_kubelet_api"]

LOG_TAIL = 1000
"""Lines asked of Vast per fetch (its CLI's default)."""
PREVIOUS_LINES = 200
"""Lines kept of a replaced instance's logs for ``kubectl logs --previous``."""


class VastKubeletBackend:
    """``KubeletBackend`` over the poller and the Vast client (module docstring)."""

    def __init__(
        self,
        vast: VastClient,
        poller: InstancePoller,
        *,
        pods: Callable[[], list[Pod]],
        node_name: str,
        follow_interval: float = FOLLOW_INTERVAL,
    ) -> None:
        self._vast = vast
        self._poller = poller
        self._pods = pods
        self._node = node_name
        self._interval = follow_interval
        self._started = _dt.datetime.now(_dt.UTC)
        self._books: dict[str, tuple[int, LogBook]] = {}
        """Pod UID → (instance id, its book)."""
        self._previous: dict[str, LogBook] = {}

    def pods(self) -> list[Pod]:
        return self._pods()

    def _pod(self, namespace: str, name: str, container: str) -> Pod:
        for pod in self._pods():
            if pod.metadata.namespace == namespace and pod.metadata.name == name:
                if container not in {c.name for c in pod.spec.containers}:
                    raise NotFound(f"container {container} is not valid for pod {name}")
                return pod
        raise NotFound(f"pod {namespace}/{name} is not on node {self._node}")

    def _current(self, pod: Pod) -> Instance | None:
        instances = self._poller.instances(pod.metadata.uid)
        return max(instances, key=lambda i: i.id) if instances else None

    def _book(self, uid: str, instance: Instance) -> LogBook:
        held = self._books.get(uid)
        if held is not None and held[0] == instance.id:
            return held[1]
        if held is not None:  # replaced: keep the tail of the old one for --previous
            old = LogBook(_constant(""), max_lines=PREVIOUS_LINES)
            old.add_snapshot("\n".join(line.text for line in held[1].lines[-PREVIOUS_LINES:]))
            self._previous[uid] = old
        book = LogBook(functools.partial(self._fetch, instance.id))
        self._books[uid] = (instance.id, book)
        live = {p.metadata.uid for p in self._pods()}
        for gone in [u for u in self._books if u not in live]:  # bounded by the node's pods
            del self._books[gone]
            self._previous.pop(gone, None)
        return book

    async def _fetch(self, instance_id: int) -> str:
        try:
            return await self._vast.request_logs(instance_id, tail=LOG_TAIL)
        except InstanceNotFound as exc:
            raise NotReady(f"instance {instance_id} is gone: {exc}") from exc
        except VastError as exc:
            error = BackendError(f"Vast.ai could not give the logs of {instance_id}: {exc}")
            error.status = 503
            raise error from exc

    async def container_logs(
        self, namespace: str, name: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        pod = self._pod(namespace, name, container)
        uid = pod.metadata.uid
        if options.previous:
            previous = self._previous.get(uid)
            if previous is None:
                raise NotReady(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return stream_logs(previous, options)
        instance = self._current(pod)
        if instance is None:
            raise NotReady(
                f'container "{container}" in pod "{name}" is waiting to start: '
                "no instance yet: waiting for an offer"
            )
        book = self._book(uid, instance)
        await book.refresh(max_age=self._interval)

        def alive() -> bool:
            current = next((p for p in self._pods() if p.metadata.uid == uid), None)
            latest = self._current(current) if current is not None else None
            return (
                current is not None
                and not current.is_terminal
                and latest is not None
                and latest.id == instance.id
                and latest.actual_status in (None, "created", "loading", "running")
            )

        return stream_logs(book, options, alive=alive, interval=self._interval)

    async def stats_summary(self) -> dict[str, Any]:
        usages = []
        for pod in self._pods():
            instance = self._current(pod)
            if instance is None or not pod.spec.containers:
                continue
            usages.append(
                PodUsage(
                    namespace=pod.metadata.namespace,
                    name=pod.metadata.name,
                    uid=pod.metadata.uid,
                    container=pod.spec.containers[0].name,
                    start_time=(
                        _dt.datetime.fromtimestamp(instance.start_date, _dt.UTC)
                        if instance.start_date
                        else None
                    ),
                    cpu_nano_cores=_scaled(
                        instance.cpu_util, 1e9 * (instance.cpu_cores_effective or 1.0)
                    ),
                    memory_bytes=_scaled(instance.mem_usage, 1e9),
                    disk_used_bytes=_scaled(instance.disk_usage, 1e9),
                    disk_capacity_bytes=_scaled(instance.disk_space, 1e9),
                    gpu_utilisation=instance.gpu_util,
                    gpu_name=instance.gpu_name,
                    gpu_memory_bytes=int(instance.gpu_ram * 2**20 * max(1, instance.num_gpus)),
                    gpu_memory_used_bytes=_scaled(instance.vmem_usage, 1e9),
                )
            )
        return stats_summary(self._node, self._started, usages, now=_dt.datetime.now(_dt.UTC))


def _scaled(value: float | None, factor: float) -> int | None:
    return None if value is None else int(value * factor)


def _constant(text: str) -> Callable[[], Any]:
    async def fetch() -> str:
        return text

    return fetch


async def cluster_ca_pem(cluster: ClusterConfig, override: str | None) -> bytes | None:
    """The CA that client certificates must chain to: ``override`` (``--client-ca-file``),
    else the cluster CA the kubeconfig or service account gave us, else None."""
    path = override or cluster.ca_file
    if path:
        return await trio.Path(path).read_bytes()
    return cluster.ca_data.encode() if cluster.ca_data else None


async def start_kubelet_api(
    settings: Settings,
    kube: KubeClient,
    cluster: ClusterConfig,
    backend: KubeletBackend,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the kubelet API for ``backend`` (a ``KubeletBackend``) until cancelled; reports
    its URL once it serves."""
    await serve_kubelet(
        kube,
        backend,
        node_name=settings.node_name,
        addresses=[settings.pod_ip],
        host=settings.kubelet_host,
        port=settings.kubelet_port,
        client_ca_pem=await cluster_ca_pem(cluster, settings.client_ca_file),
        tls_cert_file=settings.tls_cert_file,
        tls_key_file=settings.tls_private_key_file,
        metrics=render,
        task_status=task_status,
    )
