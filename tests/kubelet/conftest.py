"""A kubelet API server on a real socket, registered as a Node in the API stand-in.

``kubelet`` starts ``serve_kubelet`` with a ``FakeNode`` (real pod handles over the node
tests' ``FakeProvider``), the stand-in's CA as the client CA, and a serving certificate signed
by the stand-in's CA (the files path; the CSR path has its own tests), and creates the Node
with the kubelet's address and port, so ``kubectl logs`` and ``kubectl get --raw
.../proxy/...`` reach it through the stand-in exactly as through a real API server.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.e2e import settings_for
from tests.kubelet.fakes import NODE, FakeNode
from tests.kubelet.test_certs import pending_csr
from tests.node.fakes import FakeOutput
from tests.plugins.kube_sim import KUBECTL
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.app import serve_node
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kubelet.certs import build_csr
from vk_trio.kubelet.server import serve_kubelet


@dataclass
class Kubelet:
    url: str
    node: FakeNode
    sim: KubeSim
    kubeconfig: Path
    home: Path

    def pod(self, name: str, *, container: str = "main", namespace: str = "default") -> FakeOutput:
        """Create the pod in the API (bound to the node) and on the node."""
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
        # Running, as the node would report it: kubectl port-forward checks the phase.
        self.sim.patch(
            "pods", namespace, name, {"status": {"phase": "Running"}}, subresource="status"
        )
        return self.node.add_pod(created)

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

    async def kubectl_input(self, stdin: bytes, *args: str) -> tuple[int, str, str]:
        """kubectl with ``stdin`` as its input (``exec -i``)."""
        return await run_kubectl(self.kubeconfig, self.home, args, stdin=stdin)

    async def port_forward(self, pod: str, ports: str, ready: trio.Event) -> None:
        """``kubectl port-forward pod ports`` until cancelled; ``ready`` once it listens."""
        await port_forward(self.kubeconfig, self.home, pod, ports, ready)


async def run_kubectl(
    kubeconfig: Path, home: Path, args: Sequence[str], *, stdin: bytes = b"", within: float = 30
) -> tuple[int, str, str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
    with trio.fail_after(within):
        result = await trio.run_process(
            [str(KUBECTL), *args],
            env=env,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def port_forward(
    kubeconfig: Path, home: Path, pod: str, ports: str, ready: trio.Event
) -> None:
    """``kubectl port-forward`` until cancelled (then killed); ``ready`` is set once it says
    it forwards."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
    process = await trio.lowlevel.open_process(
        [str(KUBECTL), "port-forward", pod, ports],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        seen = b""
        while b"Forwarding from" not in seen:
            data = await process.stdout.receive_some(4096)
            assert data, f"kubectl port-forward ended: {seen!r}"
            seen += data
        ready.set()
        while await process.stdout.receive_some(4096):
            pass
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


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
    node = FakeNode()
    cert_file, key_file = serving_files(kube_sim, tmp_path)
    async with KubeClient(httpx.AsyncClient(base_url=kube_sim.url)) as kube:
        url = await nursery.start(
            functools.partial(
                serve_kubelet,
                kube,
                node.lookup,
                node.provider,
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
        yield Kubelet(url, node, kube_sim, kubeconfig, home)
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Kubectl:
    """The real kubectl against the stand-in, each call bounded so that a hang fails."""

    kubeconfig: Path
    home: Path
    health_url: str = ""
    """The node's health port (``/debug/vars`` has its event-loop stalls), when known."""

    async def __call__(
        self, *args: str, within: float = 30.0, stdin: bytes = b""
    ) -> tuple[int, str, str]:
        return await run_kubectl(self.kubeconfig, self.home, args, stdin=stdin, within=within)

    async def port_forward(self, pod: str, ports: str, ready: trio.Event) -> None:
        """``kubectl port-forward pod ports`` until cancelled; ``ready`` once it listens."""
        await port_forward(self.kubeconfig, self.home, pod, ports, ready)


ServedNode = Callable[..., Awaitable[Kubectl]]
"""``await served_node(agent=False, **vast_options)``: the real node with its kubelet API,
over both simulators (``agent``: with the vk-trio agent for pods that ask for it; give the
Vast simulator ``run_containers=True`` then); returns kubectl for the cluster."""


@pytest.fixture
def served_node(
    nursery: trio.Nursery,
    kube_sim: KubeSim,
    kubeconfig: Path,
    vast_sim_factory: VastSimFactory,
    tmp_path: Path,
) -> ServedNode:
    """``serve_node(kubelet_api=True)`` against both simulators, its serving CSR approved, so
    that kubectl reaches its kubelet API through the stand-in as through a real API server."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed")

    async def start(*, agent: bool = False, **vast_options: Any) -> Kubectl:
        vast = await vast_sim_factory(**vast_options)
        extra = {"agent_url": vast.agent_url} if agent else {}
        # The stand-in serves plain http, so the kubeconfig loader keeps no CA: name it.
        client_ca = tmp_path / "ca.crt"
        client_ca.write_bytes(kube_sim.node_api.ca.cert_pem)
        settings = settings_for(
            vast.url,
            kubeconfig,
            kubelet_host="127.0.0.1",
            kubelet_port=free_port(),
            client_ca_file=str(client_ca),
            **extra,
        )
        runtime = await nursery.start(functools.partial(serve_node, settings, kubelet_api=True))
        csr = await pending_csr(kube_sim)
        kube_sim.node_api.decide(csr["metadata"]["name"], approve=True)
        return Kubectl(kubeconfig, tmp_path, runtime.health_url)

    return start
