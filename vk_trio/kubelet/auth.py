"""Who may use the kubelet API, decided the way the kubelet decides it (webhook mode).

Authentication, first match wins:

1. a client certificate: the TLS layer (``certs.ServingTLS``) already verified its chain
   against the cluster CA, so its subject is the identity: CN the user, each O a group (the
   API server's ``--kubelet-client-certificate`` is one);
2. ``Authorization: Bearer <token>``: a ``TokenReview`` says whose it is.

Anything else is 401: the kubelet API is never open, not even to ``system:anonymous``.

Authorization: a ``SubjectAccessReview`` for verb (from the HTTP method) on ``nodes/<sub>``
named after this node, ``<sub>`` mapped from the path like the kubelet's
``GetRequestAttributes``: ``/stats/*`` → ``stats``, ``/metrics/*`` → ``metrics``, ``/logs/*`` →
``log``, ``/spec/*`` → ``spec``, ``/checkpoint/*`` → ``checkpoint``, everything else (including
``/containerLogs``, ``/pods``, ``/healthz``, ``exec``) → ``proxy``. Denied is 403.

Answers are cached like the kubelet's webhook caches (authentication 2 min, allowed 5 min,
denied 30 s), so ``kubectl logs -f`` costs one review, not one per line, and a revoked
permission takes effect within minutes. Tokens are kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography import x509
from cryptography.x509.oid import NameOID
from loguru import logger

from vk_trio.http_server import Request, Response
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError

__all__ = [
    "AUTHN_TTL",
    "AUTHZ_ALLOW_TTL",
    "AUTHZ_DENY_TTL",
    "KubeletAuth",
    "User",
    "subresource_for",
    "verb_for",
]

AUTHN_TTL = 120.0
AUTHZ_ALLOW_TTL = 300.0
AUTHZ_DENY_TTL = 30.0
CACHE_SIZE = 1024
"""Entries per cache; a full cache is emptied (reviews are cheap, memory must stay bounded)."""

_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SUBRESOURCES = (
    ("/stats", "stats"),
    ("/metrics", "metrics"),
    ("/logs", "log"),
    ("/spec", "spec"),
    ("/checkpoint", "checkpoint"),
)


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)


def verb_for(method: str) -> str:
    return _VERBS.get(method.upper(), "get")


def subresource_for(path: str) -> str:
    for prefix, subresource in _SUBRESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return subresource
    return "proxy"


def user_from_certificate(der: bytes) -> User:
    """The identity in a (verified) client certificate: CN user, O groups."""
    subject = x509.load_der_x509_certificate(der).subject
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return User(names[0] if names else "", (*groups, "system:authenticated"))


class _Cache:
    """A TTL map on the trio clock, emptied when it reaches ``CACHE_SIZE``."""

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        found = self._entries.get(key)
        if found is None or found[0] <= trio.current_time():
            return None
        return found[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self._entries) >= CACHE_SIZE:
            self._entries.clear()
        self._entries[key] = (trio.current_time() + ttl, value)


class KubeletAuth:
    """Authenticates and authorizes each kubelet API request (module docstring)."""

    def __init__(self, kube: KubeClient, *, node_name: str) -> None:
        self._kube = kube
        self._node = node_name
        self._tokens = _Cache()
        self._decisions = _Cache()

    async def check(self, request: Request) -> Response | None:
        """None when ``request`` may proceed; otherwise the 401/403/500 answer to send."""
        user = await self.authenticate(request)
        if user is None:
            return Response.text("Unauthorized", 401)
        verb, sub = verb_for(request.method), subresource_for(request.path)
        try:
            allowed, reason = await self.authorize(user, verb, sub)
        except KubeError as exc:
            logger.warning("kubelet api: authorization failed", user=user.name, error=str(exc))
            return Response.text("Authorization error", 500)
        if not allowed:
            logger.info(
                "kubelet api: forbidden",
                user=user.name,
                verb=verb,
                subresource=sub,
                reason=reason,
            )
            return Response.text(
                f"Forbidden (user={user.name}, verb={verb}, resource=nodes, subresource={sub})",
                403,
            )
        return None

    async def authenticate(self, request: Request) -> User | None:
        if request.peer_cert is not None:
            return user_from_certificate(request.peer_cert)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        key = hashlib.sha256(token.encode()).digest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached if isinstance(cached, User) else None
        try:
            review = await self._kube.request(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                idempotent=True,  # a review changes nothing
                json={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
        except KubeError as exc:
            # The kubelet answers 401 when it cannot authenticate; not cached: transient.
            logger.warning("kubelet api: token review failed", error=str(exc))
            return None
        status = (review or {}).get("status") or {}
        user: User | None = None
        if status.get("authenticated"):
            info = status.get("user") or {}
            user = User(
                str(info.get("username") or ""),
                tuple(info.get("groups") or ()),
                str(info.get("uid") or ""),
                dict(info.get("extra") or {}),
            )
        self._tokens.put(key, user if user is not None else False, AUTHN_TTL)
        return user

    async def authorize(self, user: User, verb: str, subresource: str) -> tuple[bool, str]:
        """(allowed, reason) from a SubjectAccessReview for ``verb`` on nodes/``subresource``."""
        key = (user.name, user.groups, user.uid, verb, subresource)
        cached = self._decisions.get(key)
        if cached is not None:
            allowed_cached: tuple[bool, str] = cached
            return allowed_cached
        review = await self._kube.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            idempotent=True,
            json={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.name,
                    "groups": list(user.groups),
                    "uid": user.uid,
                    "extra": user.extra,
                    "resourceAttributes": {
                        "verb": verb,
                        "resource": "nodes",
                        "subresource": subresource,
                        "name": self._node,
                    },
                },
            },
        )
        status = (review or {}).get("status") or {}
        decision = (bool(status.get("allowed")), str(status.get("reason") or ""))
        self._decisions.put(key, decision, AUTHZ_ALLOW_TTL if decision[0] else AUTHZ_DENY_TTL)
        return decision
