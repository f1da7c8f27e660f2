"""A kubelet API server on a real socket, registered as a Node in the API stand-in.

``kubelet`` starts ``serve_kubelet`` with a ``FakeBackend`` (what a provider would implement),
the stand-in's CA as the client CA, and a serving certificate signed by the stand-in's CA
(the files path; the CSR path has its own tests), and creates the Node with the kubelet's
address and port, so ``kubectl logs`` and ``kubectl get --raw .../proxy/...`` reach it through
the stand-in exactly as through a real API server.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.plugins.kube_sim import KUBECTL
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.models import Pod
from vk_trio.kubelet.backend import (
    LogOptions,
    NotFound,
    NotReady,
    PodUsage,
    stats_summary,
)
from vk_trio.kubelet.certs import build_csr
from vk_trio.kubelet.logs import LogBook, stream_logs
from vk_trio.kubelet.server import serve_kubelet

NODE = "vk-kubelet-test"
FOLLOW_INTERVAL = 0.1


@dataclass
class FakeContainer:
    """One container's output as the provider would return it: the whole current text."""

    text: str = ""
    previous_text: str | None = None
    waiting: str | None = None
    """Set: there is no instance yet, and this says what the pod waits for."""
    running: bool = True
    fetches: int = 0

    def append(self, *lines: str) -> None:
        self.text += "".join(line + "\n" for line in lines)


@dataclass
class FakeBackend:
    """A ``KubeletBackend`` over in-memory pods and containers, using the real ``LogBook``."""

    pods_by_key: dict[str, Pod] = field(default_factory=dict)
    containers: dict[tuple[str, str, str], FakeContainer] = field(default_factory=dict)
    books: dict[tuple[str, str, str], LogBook] = field(default_factory=dict)
    started: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))

    def add_pod(self, pod: dict[str, Any]) -> FakeContainer:
        decoded = msgspec.convert(pod, Pod)
        self.pods_by_key[f"{decoded.metadata.namespace}/{decoded.metadata.name}"] = decoded
        container = FakeContainer()
        key = (decoded.metadata.namespace, decoded.metadata.name, decoded.spec.containers[0].name)
        self.containers[key] = container
        return container

    def pods(self) -> list[Pod]:
        return list(self.pods_by_key.values())

    async def container_logs(
        self, namespace: str, name: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        key = (namespace, name, container)
        fake = self.containers.get(key)
        if fake is None:
            raise NotFound(f"container {container} in pod {namespace}/{name} not found")
        if fake.waiting is not None:
            raise NotReady(
                f'container "{container}" in pod "{name}" is waiting to start: {fake.waiting}'
            )
        if options.previous:
            if fake.previous_text is None:
                raise NotReady(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            book = LogBook(_constant(fake.previous_text))
            await book.refresh()
            return stream_logs(book, options)

        async def fetch() -> str:
            fake.fetches += 1
            return fake.text

        book = self.books.setdefault(key, LogBook(fetch))
        await book.refresh(max_age=FOLLOW_INTERVAL)
        return stream_logs(book, options, alive=lambda: fake.running, interval=FOLLOW_INTERVAL)

    async def stats_summary(self) -> dict[str, Any]:
        usages = [
            PodUsage(
                namespace=pod.metadata.namespace,
                name=pod.metadata.name,
                uid=pod.uid,
                container=pod.spec.containers[0].name,
                cpu_nano_cores=250_000_000,
                memory_bytes=3 * 2**30,
                gpu_utilisation=87.0,
                gpu_name="RTX 4090",
                gpu_memory_bytes=24 * 2**30,
                gpu_memory_used_bytes=20 * 2**30,
            )
            for pod in self.pods()
        ]
        return stats_summary(NODE, self.started, usages, now=_dt.datetime.now(_dt.UTC))


def _constant(text: str) -> Callable[[], Any]:
    async def fetch() -> str:
        return text

    return fetch


@dataclass
class Kubelet:
    url: str
    backend: FakeBackend
    sim: KubeSim
    kubeconfig: Path
    home: Path

    def pod(
        self, name: str, *, container: str = "main", namespace: str = "default"
    ) -> FakeContainer:
        """Create the pod in the API (bound to the node) and in the backend."""
        created = self.sim.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"name": container, "image": "vllm/vllm-openai:v0.6.3"}],
                },
            }
        )
        return self.backend.add_pod(created)

    async def kubectl(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.home)}
        with trio.fail_after(30):
            result = await trio.run_process(
                [str(KUBECTL), *args],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        out, err = result.stdout.decode(), result.stderr.decode()
        if check:
            assert result.returncode == 0, err
        return result.returncode, out, err


def serving_files(sim: KubeSim, directory: Path) -> tuple[str, str]:
    """A serving certificate for 127.0.0.1 signed by the stand-in's CA, as PEM files."""
    csr, key = build_csr(NODE, ["127.0.0.1", "localhost"])
    cert = sim.node_api.ca.sign_kubelet_serving(csr, _dt.timedelta(days=1))
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    return str(cert_file), str(key_file)


def register_node(sim: KubeSim, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            },
        }
    )


@pytest.fixture
async def kubelet(
    nursery: trio.Nursery, kube_sim: KubeSim, kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[Kubelet]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    backend = FakeBackend()
    cert_file, key_file = serving_files(kube_sim, tmp_path)
    async with KubeClient(httpx.AsyncClient(base_url=kube_sim.url)) as kube:
        url = await nursery.start(
            functools.partial(
                serve_kubelet,
                kube,
                backend,
                node_name=NODE,
                addresses=["127.0.0.1"],
                host="127.0.0.1",
                port=0,
                client_ca_pem=kube_sim.node_api.ca.cert_pem,
                tls_cert_file=cert_file,
                tls_key_file=key_file,
                metrics=lambda: (b"# metrics\n", "text/plain; version=0.0.4"),
            )
        )
        register_node(kube_sim, url)
        home = tmp_path / "home"
        home.mkdir()
        yield Kubelet(url, backend, kube_sim, kubeconfig, home)
        nursery.cancel_scope.cancel()
