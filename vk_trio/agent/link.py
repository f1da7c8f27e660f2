"""The link: one mutually authenticated TLS connection per request, node → agent.

The agent's port is published on the public internet, so both ends prove who they are.
Credentials are per pod and need no stored state: the node derives a pod's secret from its
own master secret and the pod's UID (:func:`pod_secret`), and from that secret two Ed25519
keys, one for each end (:func:`node_keys`). Their certificates are self-signed and built
deterministically (Ed25519 signatures are deterministic, the dates and serial are fixed),
so a restarted node rebuilds exactly the certificate the agent pins.

The agent is given, in its environment at create time, only its own key and the node's
certificate (:func:`agent_credentials`): never the node's key. Each end trusts exactly one
certificate, the other's, so:

- a client without the pod's credentials, or with another pod's, fails the handshake (the
  agent requires a client certificate and trusts only its node's);
- the node talks only to the agent it issued the key to (it trusts only that certificate);
- a recorded handshake cannot be replayed: TLS 1.3 binds each handshake to fresh ephemeral
  keys and both ends' signatures over it (and no 0-RTT data is accepted).

Frames are a 4-byte big-endian length and a msgpack message (``protocol.py``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import os
import ssl
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from vk_trio.agent.protocol import Answer, Request, StreamFrame

__all__ = [
    "ALPN",
    "CREDENTIALS_ENV",
    "FrameStream",
    "LinkClosed",
    "LinkKeys",
    "agent_credentials",
    "agent_keys",
    "client_context",
    "node_keys",
    "pod_secret",
    "server_context",
]

ALPN = "vk-trio-link/1"
CREDENTIALS_ENV = "VK_TRIO_LINK"
"""The agent's environment variable that holds :func:`agent_credentials`."""

MAX_FRAME = 64 * 1024 * 1024
"""A bundle carries the pod's volumes (ConfigMaps and Secrets are at most 1 MiB each)."""

_NOT_BEFORE = _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
_NOT_AFTER = _dt.datetime(9999, 12, 31, tzinfo=_dt.UTC)


class LinkClosed(Exception):
    """The other end closed the connection or sent something that is not a frame."""


@dataclass(frozen=True)
class LinkKeys:
    """What one end holds: its key and certificate (PEM), and the one certificate it trusts."""

    own_key: bytes
    own_cert: bytes
    peer_cert: bytes


def pod_secret(master: bytes, pod_uid: str) -> bytes:
    """The pod's link secret: the node's master secret keyed with the pod's UID."""
    return hmac.digest(master, b"vk-trio link v1 " + pod_uid.encode(), "sha256")


def _seed(secret: bytes, end: str) -> bytes:
    return hmac.digest(secret, end.encode(), "sha256")


def _key_and_cert(seed: bytes, end: str) -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vk-trio {end}")])
    serial = int.from_bytes(hashlib.sha256(seed).digest()[:16], "big") >> 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def node_keys(secret: bytes) -> LinkKeys:
    """The node's end of the pod's link."""
    node_key, node_cert = _key_and_cert(_seed(secret, "node"), "node")
    _, agent_cert = _key_and_cert(_seed(secret, "agent"), "agent")
    return LinkKeys(own_key=node_key, own_cert=node_cert, peer_cert=agent_cert)


class _Credentials(msgspec.Struct, frozen=True):
    agent_seed: bytes
    node_cert: bytes


def agent_credentials(secret: bytes) -> str:
    """The agent's end, as one environment value: its key's seed and the node's certificate."""
    _, node_cert = _key_and_cert(_seed(secret, "node"), "node")
    packed = msgspec.msgpack.encode(_Credentials(_seed(secret, "agent"), node_cert))
    return base64.b64encode(packed).decode()


def agent_keys(credentials: str) -> LinkKeys:
    """Read :func:`agent_credentials` back, inside the instance. Raises ``ValueError``."""
    try:
        packed = msgspec.msgpack.decode(base64.b64decode(credentials), type=_Credentials)
        agent_key, agent_cert = _key_and_cert(packed.agent_seed, "agent")
    except (msgspec.DecodeError, ValueError, TypeError) as error:
        raise ValueError(f"{CREDENTIALS_ENV} is not a vk-trio link credential") from error
    return LinkKeys(own_key=agent_key, own_cert=agent_cert, peer_cert=packed.node_cert)


def _context(purpose: ssl.Purpose, keys: LinkKeys) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cadata=keys.peer_cert.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the one trusted certificate is the pin, not a name
    context.verify_mode = ssl.CERT_REQUIRED
    # load_cert_chain reads files only: an anonymous memory file keeps the key off disk.
    fd = os.memfd_create("vk-trio-link", os.MFD_CLOEXEC)
    try:
        os.write(fd, keys.own_key + keys.own_cert)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    context.set_alpn_protocols([ALPN])
    return context


def server_context(keys: LinkKeys) -> ssl.SSLContext:
    """The agent's: requires the node's certificate from every client."""
    return _context(ssl.Purpose.CLIENT_AUTH, keys)


def client_context(keys: LinkKeys) -> ssl.SSLContext:
    """The node's: accepts only the pod's agent."""
    return _context(ssl.Purpose.SERVER_AUTH, keys)


_T = TypeVar("_T")


class FrameStream:
    """Typed frames over a byte stream (the TLS stream of one link connection).

    A stream connection (exec, attach, port-forward) has several tasks sending at once (a
    process's stdout and stderr, a client's input and resizes): sends take turns under a
    FIFO lock, while one other task receives (trio's SSLStream allows one of each at once).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._encoder = msgspec.msgpack.Encoder()
        self._requests = msgspec.msgpack.Decoder(Request)
        self._answers = msgspec.msgpack.Decoder(Answer)
        self._streams = msgspec.msgpack.Decoder(StreamFrame)
        self._sending = trio.StrictFIFOLock()

    async def send(self, message: Request | Answer | StreamFrame) -> None:
        """One frame; returns once the connection took it (the sender's back-pressure)."""
        body = self._encoder.encode(message)
        async with self._sending:
            await self.stream.send_all(len(body).to_bytes(4, "big") + body)

    async def _frame(self) -> bytes | None:
        while True:
            if len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if size > MAX_FRAME:
                    raise LinkClosed(f"a frame of {size} bytes is over the limit")
                if len(self._buffer) >= 4 + size:
                    body = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return body
            data = await self.stream.receive_some(65536)
            if not data:
                if self._buffer:
                    raise LinkClosed("the connection ended inside a frame")
                return None
            self._buffer += data

    async def _receive(self, decoder: msgspec.msgpack.Decoder[_T]) -> _T | None:
        body = await self._frame()
        if body is None:
            return None
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as error:
            raise LinkClosed(f"not a vk-trio link message: {error}") from error

    async def receive_request(self) -> Request | None:
        """The next request, or None at the end of the stream."""
        return await self._receive(self._requests)

    async def receive_answer(self) -> Answer | None:
        """The next answer, or None at the end of the stream."""
        return await self._receive(self._answers)

    async def receive_stream(self) -> StreamFrame | None:
        """The next frame of a stream connection (either end), or None at its end."""
        return await self._receive(self._streams)

    async def aclose(self) -> None:
        await self.stream.aclose()
