"""The kubelet API's TLS: which serving certificate, and whose client certificates count.

Serving certificate, in order of preference:

1. files given by ``--tls-cert-file``/``--tls-private-key-file`` (e.g. a mounted Secret);
2. a ``CertificateSigningRequest`` like a kubelet with ``serverTLSBootstrap``: signer
   ``kubernetes.io/kubelet-serving``, subject ``CN=system:node:<node>, O=system:nodes``, the
   node's addresses as SANs, usages digital signature, key encipherment, server auth. It is
   never auto-approved, so the log and an Event on the Node say exactly what to run
   (``kubectl certificate approve <name>``). Once issued it is used from the next connection
   on, and a new one is requested at 80 % of its lifetime;
3. a self-signed certificate, said loudly in the log: served while the CSR waits, and for
   good when the CSR is refused (Denied/Failed) or cannot be created (RBAC). An API server
   started without ``--kubelet-certificate-authority`` (the default) accepts it; one started
   with it refuses it, and the log says why.

Client certificates are verified against the cluster CA (the kubeconfig's or the service
account's ``ca.crt``, or ``--client-ca-file``): the API server's kubelet-client certificate
chains to it. A client without a certificate may still use a bearer token (``auth``).

Keys are EC P-256: as good as RSA-2048 for this, and generated in a millisecond; the
generation and the PEM/file work still run in a worker thread, off the Trio loop.
"""

from __future__ import annotations

import base64
import datetime as _dt
import ipaddress
import secrets
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from loguru import logger

from vk_trio.kube.api import KubeClient, format_time, utcnow
from vk_trio.kube.errors import KubeError, KubeForbidden
from vk_trio.kube.events import EventRecorder, Involved
from vk_trio.retry import CSR_CREATE, Retryable, log_retry, retry_until_done

__all__ = [
    "CSR_POLL_INTERVAL",
    "RENEW_AT",
    "SIGNER",
    "CertificateRefused",
    "KeyPair",
    "ServingTLS",
    "build_csr",
    "rotate_serving_certificate",
    "self_signed",
]

SIGNER = "kubernetes.io/kubelet-serving"
RENEW_AT = 0.8
"""Fraction of a certificate's lifetime after which a new one is requested (as the kubelet)."""
CSR_POLL_INTERVAL = 5.0
"""Seconds between looks at a pending CSR: approval is a human typing a command."""
CSR_FAILURES = Retryable((KubeError,), never=(KubeForbidden,))
"""Asked again (along ``vk_trio.retry.CSR_CREATE``): the API is down or has no CSR API. Not
a 403 (RBAC: an operator must act), nor a refused CSR."""
SELF_SIGNED_DAYS = 365
_CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


class CertificateRefused(Exception):
    """The CSR was denied or failed; the message says which, and why when the API says."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(addresses: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return x509.SubjectAlternativeName(names)


def _node_subject(node_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}"),
        ]
    )


def build_csr(node_name: str, addresses: Sequence[str]) -> tuple[bytes, bytes]:
    """(CSR PEM, key PEM) for a kubelet serving certificate (CPU work: run it in a thread)."""
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_node_subject(node_name))
        .add_extension(_sans(addresses), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def self_signed(node_name: str, addresses: Sequence[str]) -> KeyPair:
    """A self-signed serving certificate for the node (CPU work: run it in a thread)."""
    key = _new_key()
    now = _dt.datetime.now(_dt.UTC)
    subject = _node_subject(node_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(_sans(addresses), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


class ServingTLS:
    """The kubelet API's current TLS context; ``context`` is what the server calls per
    connection, ``install`` swaps the certificate for every connection after it.

    ``client_ca_pem`` is the CA bundle client certificates must chain to (None: no client
    certificates are accepted, only bearer tokens).
    """

    def __init__(self, *, client_ca_pem: bytes | None) -> None:
        self._client_ca = client_ca_pem
        self._context: ssl.SSLContext | None = None
        self.source = ""
        """Where the current certificate came from: "files", "csr <name>", "self-signed"."""
        self.not_after: _dt.datetime | None = None
        self.changed = trio.Event()
        """Set (and replaced) each time a certificate is installed."""

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            raise RuntimeError("no serving certificate installed yet")
        return self._context

    async def install(self, pair: KeyPair, source: str) -> None:
        """Use ``pair`` for new connections (builds the context in a worker thread)."""
        self._context = await trio.to_thread.run_sync(self._build, pair)
        self.source = source
        self.not_after = pair.certificate.not_valid_after_utc
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    def _build(self, pair: KeyPair) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain only reads files: a private directory that exists for one call.
        with tempfile.TemporaryDirectory(prefix="vk-trio-tls-") as directory:
            cert_file, key_file = Path(directory, "tls.crt"), Path(directory, "tls.key")
            cert_file.write_bytes(pair.cert_pem)
            key_file.touch(mode=0o600)
            key_file.write_bytes(pair.key_pem)
            context.load_cert_chain(cert_file, key_file)
        if self._client_ca:
            context.load_verify_locations(cadata=self._client_ca.decode())
            context.verify_mode = ssl.CERT_OPTIONAL  # a token may stand in for a certificate
        return context

    async def install_files(self, cert_file: str, key_file: str) -> None:
        pair = KeyPair(
            await trio.Path(cert_file).read_bytes(), await trio.Path(key_file).read_bytes()
        )
        await self.install(pair, "files")
        logger.info(
            "kubelet api: serving certificate from files",
            cert_file=cert_file,
            not_after=format_time(pair.certificate.not_valid_after_utc),
        )

    async def install_self_signed(self, node_name: str, addresses: Sequence[str], why: str) -> None:
        pair = await trio.to_thread.run_sync(self_signed, node_name, list(addresses))
        await self.install(pair, "self-signed")
        logger.warning(
            "kubelet api: serving with a SELF-SIGNED certificate; an API server started "
            "with --kubelet-certificate-authority will refuse it (kubectl logs then fails "
            "with 'x509: certificate signed by unknown authority')",
            why=why,
        )


async def rotate_serving_certificate(
    kube: KubeClient,
    tls: ServingTLS,
    *,
    node_name: str,
    addresses: Sequence[str],
    poll_interval: float = CSR_POLL_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``tls`` serving a certificate signed through the cluster's CSR API, forever.

    Installs a self-signed certificate first (so the port serves at once), then requests a
    kubelet-serving certificate, waits for approval and issuance, installs it, and requests
    the next one at ``RENEW_AT`` of its lifetime.

    Error handling: a refused CSR or one the API forbids us to create ends the rotation (the
    current certificate stays; the log says what happened and what to do); other API errors
    are retried (``CSR_FAILURES``, or ``poll_interval`` while waiting for approval). It never
    raises them: a node without a signed certificate still runs its pods. Cancellation ends
    it at any point.
    """
    if tls.source == "":
        await tls.install_self_signed(
            node_name, addresses, "until the serving certificate's CSR is approved"
        )
    task_status.started()
    while True:
        try:
            pair, name = await retry_until_done(
                lambda: _request_certificate(
                    kube, node_name=node_name, addresses=addresses, poll_interval=poll_interval
                ),
                schedule=CSR_CREATE,
                on=CSR_FAILURES,
                on_retry=log_retry("kubelet api: requesting a serving certificate failed"),
            )
        except CertificateRefused as exc:
            logger.error(
                "kubelet api: serving certificate refused; keeping the current certificate",
                error=str(exc),
                certificate=tls.source,
            )
            return
        except KubeForbidden as exc:
            logger.error(
                "kubelet api: cannot request a serving certificate (RBAC: "
                "certificatesigningrequests create/get)",
                error=str(exc),
            )
            return
        await tls.install(pair, f"csr {name}")
        cert = pair.certificate
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        renew_at = start + (end - start) * RENEW_AT
        logger.info(
            "kubelet api: serving certificate issued",
            csr=name,
            not_after=format_time(end),
            renew_at=format_time(renew_at),
        )
        await trio.sleep(max(0.0, (renew_at - utcnow()).total_seconds()))


async def _request_certificate(
    kube: KubeClient, *, node_name: str, addresses: Sequence[str], poll_interval: float
) -> tuple[KeyPair, str]:
    """Create one CSR and wait until it is issued (raises ``CertificateRefused``)."""
    csr_pem, key_pem = await trio.to_thread.run_sync(build_csr, node_name, list(addresses))
    name = f"csr-{secrets.token_hex(4)}"
    await kube.request(
        "POST",
        _CSR_PATH,
        json={
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr_pem).decode(),
                "signerName": SIGNER,
                "usages": ["digital signature", "key encipherment", "server auth"],
            },
        },
        idempotent=True,  # a name clash on a retry is a 409, never a second CSR
    )
    command = f"kubectl certificate approve {name}"
    logger.warning(
        "kubelet api: serving certificate requested; approve it", command=command, csr=name
    )
    await EventRecorder(kube, host=node_name).emit_for(
        Involved.node(node_name),
        type="Warning",
        reason="CertificateApprovalNeeded",
        message=f"The kubelet API's serving certificate waits for approval: {command}",
    )
    while True:
        try:
            csr = await kube.request("GET", f"{_CSR_PATH}/{name}")
        except KubeForbidden:
            raise
        except KubeError as exc:
            logger.info("kubelet api: CSR not readable yet", csr=name, error=str(exc))
            csr = None
        status: dict[str, Any] = (csr or {}).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Denied", "Failed") and condition.get("status") != "False":
                why = condition.get("message") or condition.get("reason") or ""
                raise CertificateRefused(
                    f"CSR {name} {condition['type'].lower()}" + (f": {why}" if why else "")
                )
        if status.get("certificate"):
            return KeyPair(base64.b64decode(status["certificate"]), key_pem), name
        await trio.sleep(poll_interval)
