"""The stand-in's certificate authority: the cluster CA, the API server's kubelet-client
certificate, and the ``kubernetes.io/kubelet-serving`` signer.

A real cluster has one CA (kubeadm's ``/etc/kubernetes/pki/ca.crt``) that (1) nodes trust for
client certificates, because the API server's ``--kubelet-client-certificate`` chains to it,
(2) kube-controller-manager signs approved kubelet-serving CSRs with, and (3) the API server
verifies kubelet serving certificates against (``--kubelet-certificate-authority``). The
stand-in plays all three with one in-memory EC P-256 CA, created per ``KubeSim`` (a
millisecond). Its PEM goes into the kubeconfig the stand-in writes, which is how the node
learns the cluster CA, exactly as from a real kubeconfig or ``ca.crt``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_CLIENT_USER = "kube-apiserver-kubelet-client"
APISERVER_CLIENT_GROUP = "system:masters"
"""The identity of the stand-in's kubelet-client certificate (kubeadm's, before 1.29)."""


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, *organizations: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class SigningRefused(ValueError):
    """The CSR does not meet the signer's rules; the message says which."""


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


class ClusterCA:
    """One CA key and certificate; ``sign_kubelet_serving`` is the CSR signer."""

    def __init__(self, name: str = "vk-trio-sim-ca") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        subject = _name(name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        usage: x509.ObjectIdentifier,
        lifetime: _dt.timedelta,
        sans: x509.SubjectAlternativeName | None = None,
    ) -> bytes:
        now = _dt.datetime.now(_dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def client_certificate(self, user: str, *groups: str) -> Issued:
        """A client certificate for ``user`` in ``groups`` (the API server's kubelet client)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(
            _name(user, *groups),
            key.public_key(),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            _dt.timedelta(days=365),
        )
        return Issued(cert, _key_pem(key))

    def sign_kubelet_serving(self, csr_pem: bytes, lifetime: _dt.timedelta) -> bytes:
        """Sign an approved kubelet-serving CSR after the signer's checks (subject
        ``system:node:*`` in ``system:nodes``, at least one SAN), like kube-controller-manager."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise SigningRefused(f"unparsable CSR: {exc}") from exc
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not names or not str(names[0].value).startswith("system:node:"):
            raise SigningRefused("subject CN must be system:node:<name>")
        if orgs != ["system:nodes"]:
            raise SigningRefused("subject O must be exactly system:nodes")
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise SigningRefused("at least one DNS or IP subjectAltName is required") from None
        if not csr.is_signature_valid:
            raise SigningRefused("the CSR's signature does not verify")
        return self._issue(
            csr.subject, csr.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, lifetime, sans
        )
