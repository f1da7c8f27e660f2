"""The serving certificate's CSR path against the stand-in's signer: issued, renewed, refused.

The stand-in signs approved ``kubernetes.io/kubelet-serving`` CSRs with its CA, like
kube-controller-manager; approval is a test (or the real ``kubectl certificate approve``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from loguru import logger
from trio.testing import MockClock

from tests.plugins.kube_sim import KUBECTL, Kubectl
from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.kube.pki import ClusterCA
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.kube.api import KubeClient
from vk_trio.kubelet.certs import SIGNER, ServingTLS, rotate_serving_certificate
from vk_trio.retry import CSR_CREATE, NO_RETRY

NODE = "vk-cert-node"


@pytest.fixture
async def kube(kube_sim: KubeSim) -> AsyncIterator[KubeClient]:
    async with KubeClient(httpx.AsyncClient(base_url=kube_sim.url)) as client:
        yield client


def _pending(sim: KubeSim) -> list[dict[str, Any]]:
    return [c for c in sim.list("certificatesigningrequests") if not c.get("status")]


async def pending_csr(sim: KubeSim) -> dict[str, Any]:
    """The CSR that waits for a decision (listed by name, so the newest is not the last)."""
    with trio.fail_after(10):
        await sim.wait_until(lambda s: _pending(s))
    [pending] = _pending(sim)
    return pending


async def start_rotation(nursery: trio.Nursery, kube: KubeClient, tls: ServingTLS) -> None:
    await nursery.start(
        functools.partial(
            rotate_serving_certificate,
            kube,
            tls,
            node_name=NODE,
            addresses=["127.0.0.1", "gpu-node.example"],
            poll_interval=0.05,
        )
    )


async def served_certificate(tls: ServingTLS, ca_pem: bytes) -> x509.Certificate:
    """Serve with ``tls`` and connect verifying against ``ca_pem``: the cert the peer saw."""

    async def handler(request: Request) -> Response:
        return Response.text("ok")

    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(serve_http, handler, host="127.0.0.1", tls=tls.context)
        )
        context = ssl.create_default_context(cadata=ca_pem.decode())
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(url + "/")
            assert response.text == "ok"
            der = (
                response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
            )
        nursery.cancel_scope.cancel()
    return x509.load_der_x509_certificate(der)


async def test_a_kubelet_serving_csr_is_requested_and_its_certificate_served(
    nursery: trio.Nursery, kube_sim: KubeSim, kube: KubeClient
) -> None:
    tls = ServingTLS(client_ca_pem=None)
    await start_rotation(nursery, kube, tls)
    assert tls.source == "self-signed"  # serving at once, until the CSR is approved
    csr = await pending_csr(kube_sim)
    spec = csr["spec"]
    assert isinstance(spec, dict)
    assert spec["signerName"] == SIGNER
    assert spec["usages"] == ["digital signature", "key encipherment", "server auth"]
    request = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"system:node:{NODE}"
    )
    assert request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:nodes"
    )
    name = csr["metadata"]["name"]
    with trio.fail_after(10):
        await kube_sim.wait_until(lambda s: s.list("events", "default"))
    events = kube_sim.list("events", "default")
    assert [e["message"] for e in events] == [
        f"The kubelet API's serving certificate waits for approval: "
        f"kubectl certificate approve {name}"
    ]
    assert events[0]["involvedObject"]["kind"] == "Node"

    kube_sim.node_api.decide(name, approve=True)
    with trio.fail_after(10):
        while tls.source == "self-signed":
            await tls.changed.wait()
    assert tls.source == f"csr {name}"
    cert = await served_certificate(tls, kube_sim.node_api.ca.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["gpu-node.example"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


async def test_the_certificate_is_renewed_before_it_expires(nursery: trio.Nursery) -> None:
    sim = KubeSim(csr_lifetime=2.0)  # renewed at 80 %: 1.6 s after issue
    await nursery.start(sim.serve)
    async with KubeClient(httpx.AsyncClient(base_url=sim.url)) as kube:
        tls = ServingTLS(client_ca_pem=None)
        await start_rotation(nursery, kube, tls)
        first = await pending_csr(sim)
        sim.node_api.decide(first["metadata"]["name"], approve=True)
        second = await pending_csr(sim)
        issued_first = tls.not_after
        assert tls.source == f"csr {first['metadata']['name']}"
        sim.node_api.decide(second["metadata"]["name"], approve=True)
        with trio.fail_after(10):
            while tls.source != f"csr {second['metadata']['name']}":
                await tls.changed.wait()
        assert tls.not_after is not None and issued_first is not None
        assert tls.not_after > issued_first
        nursery.cancel_scope.cancel()


async def test_a_denied_csr_keeps_the_self_signed_certificate_and_says_so(
    nursery: trio.Nursery, kube_sim: KubeSim, kube: KubeClient
) -> None:
    errors: list[str] = []  # the ``error`` field of each error logged (keyword fields only)
    sink = logger.add(lambda m: errors.append(m.record["extra"].get("error", "")), level="ERROR")
    try:
        tls = ServingTLS(client_ca_pem=None)
        done = trio.Event()

        async def rotate() -> None:
            await rotate_serving_certificate(
                kube, tls, node_name=NODE, addresses=["127.0.0.1"], poll_interval=0.05
            )
            done.set()

        nursery.start_soon(rotate)
        csr = await pending_csr(kube_sim)
        name = csr["metadata"]["name"]
        kube_sim.node_api.decide(name, approve=False, message="not our node")
        with trio.fail_after(10):
            await done.wait()  # the rotation ends: asking again would be refused again
    finally:
        logger.remove(sink)
    assert tls.source == "self-signed"
    assert f"CSR {name} denied: not our node" in errors, errors


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_certificate_approve_issues_the_certificate(
    nursery: trio.Nursery, kube_sim: KubeSim, kube: KubeClient, kubectl: Kubectl
) -> None:
    tls = ServingTLS(client_ca_pem=None)
    await start_rotation(nursery, kube, tls)
    csr = await pending_csr(kube_sim)
    name = csr["metadata"]["name"]
    out = await kubectl("get", "csr")
    assert name in out and "Pending" in out
    out = await kubectl("certificate", "approve", name)
    assert f"certificatesigningrequest.certificates.k8s.io/{name} approved" in out
    with trio.fail_after(10):
        while tls.source == "self-signed":
            await tls.changed.wait()
    assert "Approved,Issued" in await kubectl("get", "csr", name)


@pytest.fixture
def thread_safe_clock() -> MockClock:
    """Jumps only after 0.2 s of real idleness: key generation runs in a worker thread, and
    a clock that jumps at once would time out while waiting for it."""
    return MockClock(autojump_threshold=0.2)


async def test_api_errors_while_requesting_are_retried_not_fatal(
    thread_safe_clock: MockClock,
) -> None:
    ca = ClusterCA()
    created: list[dict[str, Any]] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/certificatesigningrequests"):
            if not created:
                created.append({})
                return httpx.Response(503, json={"kind": "Status", "message": "etcd is down"})
            created.append(msgspec.json.decode(request.content))
            return httpx.Response(201, json=created[-1])
        if request.method == "GET":
            csr_pem = base64.b64decode(created[-1]["spec"]["request"])
            issued = ca.sign_kubelet_serving(csr_pem, _dt.timedelta(days=30))
            return httpx.Response(
                200,
                json={**created[-1], "status": {"certificate": base64.b64encode(issued).decode()}},
            )
        return httpx.Response(201, json={})  # the Event

    http = httpx.AsyncClient(transport=httpx.MockTransport(api), base_url="http://kube")
    async with KubeClient(http, retry=NO_RETRY) as kube, trio.open_nursery() as nursery:
        tls = ServingTLS(client_ca_pem=None)
        await start_rotation(nursery, kube, tls)
        with trio.fail_after(CSR_CREATE.cap * 2):
            while tls.source == "self-signed":
                await tls.changed.wait()
        assert len(created) == 2  # the failed create, then the one that was issued
        nursery.cancel_scope.cancel()
