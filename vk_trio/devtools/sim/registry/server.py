"""A container registry on loopback, close enough to the distribution spec that
``vk_trio.registry`` and real tools (``crane``, ``skopeo``, ``docker pull`` of a
``localhost:PORT/...`` image) accept it. Plain HTTP: those tools treat loopback registries as
insecure by default, as ``vk_trio.registry`` does.

What it serves:

- ``GET /v2/``: 200, or 401 with a ``Bearer`` challenge when auth is on;
- ``GET /token?service=...&scope=repository:<name>:pull``: Docker's token protocol. Public
  repositories get anonymous tokens; a private one needs HTTP basic auth with a configured
  user and password, and wrong credentials are a 401 whatever the scope;
- ``GET|HEAD /v2/<name>/manifests/<tag|digest>``: the OCI index (``linux/amd64``,
  ``linux/arm64``) a tag points at, or a platform's image manifest by digest. A client whose
  ``Accept`` takes no index gets the ``linux/amd64`` manifest, as distribution does;
- ``GET|HEAD /v2/<name>/blobs/<digest>``: configs and layers (arbitrary bytes, so a test can
  serve a binary as a layer); ``redirect_blobs`` sends them through a 307 to ``/_blobs/``,
  the way registries hand blobs to storage;
- ``GET /v2/<name>/tags/list``.

Every manifest and blob answer carries ``Docker-Content-Digest``; errors are distribution's
``{"errors": [{"code": "MANIFEST_UNKNOWN", ...}]}``.

Auth modes: ``bearer`` (the default, as Docker Hub and ghcr.io), ``basic`` (private
repositories take HTTP basic auth directly, as an htpasswd registry), ``none``.

For tests: ``requests`` counts what was asked (``ping``, ``token``, ``manifest``, ``blob``,
``tags``), ``faults`` makes every answer a status (503) or slow, :meth:`RegistrySim.stop`
closes the listener (connections are then refused), :meth:`RegistrySim.tamper_blob`
replaces a blob's bytes under its digest.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from loguru import logger

from vk_trio.devtools.sim.registry.images import (
    DEFAULT_PLATFORMS,
    INDEX_TYPE,
    BuiltImage,
    build_image,
)
from vk_trio.http_server import Request, Response, serve_http

__all__ = ["AuthMode", "RegistryFaults", "RegistrySim"]

AuthMode = Literal["bearer", "basic", "none"]
SERVICE = "vk-trio-sim-registry"
_ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)")


@dataclass
class RegistryFaults:
    """Test hooks: ``status`` answers every request (token included) with it, e.g. 503;
    ``latency`` seconds are slept before each answer."""

    status: int | None = None
    latency: float = 0.0


@dataclass
class _Repository:
    private: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    documents: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    amd64: dict[str, str] = field(default_factory=dict)
    """Index digest → its linux/amd64 manifest's digest (for clients that take no index)."""
    blobs: dict[str, bytes] = field(default_factory=dict)


class RegistrySim:
    """An in-memory registry behind an HTTP server on loopback.

    Start it with ``await nursery.start(sim.serve)``; ``sim.host`` (``127.0.0.1:PORT``) is
    then the registry part of image references, ``sim.url`` its base URL.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        auth: AuthMode = "bearer",
        redirect_blobs: bool = False,
    ) -> None:
        self.users = dict(users or {})
        """user → password, for private repositories."""
        self.auth: AuthMode = auth
        self.redirect_blobs = redirect_blobs
        self.faults = RegistryFaults()
        self.requests: Counter[str] = Counter()
        self.url = ""
        self.host = ""
        self._repos: dict[str, _Repository] = {}
        self._blobs: dict[str, bytes] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._scope: trio.CancelScope | None = None

    def add_image(
        self,
        name: str,
        tag: str,
        config: Mapping[str, Any],
        layers: Sequence[bytes] = (),
        *,
        private: bool = False,
        platforms: Sequence[str] = DEFAULT_PLATFORMS,
        index: bool = True,
    ) -> BuiltImage:
        """Store an image as ``name:tag`` (``config`` as in ``images.build_image``); a
        repository is private if any of its images was added with ``private=True``."""
        built = build_image(config, layers, platforms=platforms, index=index)
        repo = self._repos.setdefault(name, _Repository())
        repo.private = repo.private or private
        repo.tags[tag] = built.digest
        repo.documents.update(built.documents)
        repo.blobs.update(built.blobs)
        if index and "linux/amd64" in built.manifests:
            repo.amd64[built.digest] = built.manifests["linux/amd64"]
        self._blobs.update(built.blobs)
        return built

    def add_image_configs(self, configs: Mapping[str, Mapping[str, Any]]) -> None:
        """Store a config-only image for each ``name[:tag]`` → config document (the Vast
        simulator's ``image_configs()``), so that the node's registry client reads the
        config the simulated instance runs. A first path component naming this registry
        (``self.host``) or any host (a dot, a colon or ``localhost``) is dropped; no tag is
        ``latest``; a ``@digest`` name cannot be stored under its digest and is skipped."""
        for name, config in configs.items():
            if "@" in name:
                continue
            repository, tag = name, "latest"
            if ":" in name.rsplit("/", 1)[-1]:
                repository, tag = name.rsplit(":", 1)
            first, _, rest = repository.partition("/")
            if rest and (first in (self.host, "localhost") or "." in first or ":" in first):
                repository = rest
            self.add_image(repository, tag, config)

    def tamper_blob(self, digest: str, data: bytes) -> None:
        """Serve ``data`` under ``digest`` from now on (a corrupt store, a meddling proxy)."""
        self._blobs[digest] = data
        for repo in self._repos.values():
            if digest in repo.blobs:
                repo.blobs[digest] = data

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled or :meth:`stop`; reports the base URL once bound."""
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                url: str = await nursery.start(
                    functools.partial(serve_http, self.handle, host=host, port=port)
                )
                self.url = url
                self.host = url.split("://", 1)[1]
                logger.info("registry sim listening", url=url, auth=self.auth)
                task_status.started(url)

    def stop(self) -> None:
        """Close the listener: from now on connections to it are refused."""
        if self._scope is not None:
            self._scope.cancel()

    async def handle(self, request: Request) -> Response:
        """Answer one request (the ``serve_http`` handler)."""
        if self.faults.latency > 0:
            await trio.sleep(self.faults.latency)
        kind, match = self._classify(request.path)
        self.requests[kind] += 1
        if self.faults.status is not None:
            return _error(self.faults.status, "UNAVAILABLE", "simulated failure")
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "the simulator serves pulls only")
        if kind == "token":
            return self._token(request)
        if kind == "local-blob":  # where redirects lead: storage, no auth (a signed URL)
            digest = request.path.rsplit("/", 1)[-1]
            return self._blob_response(self._blobs.get(digest), digest)
        if kind == "ping":
            return self._gate(request, None) or Response.json({})
        if match is None:
            return _error(404, "NOT_FOUND", f"{request.path} is not a registry route")
        return self._gate(request, match["name"]) or self._repository_route(request, match)

    @staticmethod
    def _classify(path: str) -> tuple[str, re.Match[str] | None]:
        if path.rstrip("/") == "/v2":
            return "ping", None
        if path == "/token":
            return "token", None
        if path.startswith("/_blobs/"):
            return "local-blob", None
        match = _ROUTE.fullmatch(path)
        kind = {"manifests": "manifest", "blobs": "blob", "tags": "tags"}
        return (kind[match["kind"]], match) if match else ("other", None)

    def _gate(self, request: Request, name: str | None) -> Response | None:
        """None when the request may see ``name`` (None: the ``/v2/`` ping), else a 401."""
        repo = self._repos.get(name) if name else None
        header = request.headers.get("authorization", "")
        if self.auth == "none":
            return None
        if self.auth == "basic":
            if repo is None or not repo.private or self._basic_user(header):
                return None
            return _error(401, "UNAUTHORIZED", "authentication required", ("Basic", {}))
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        grants = self._tokens.get(token)
        if grants is not None and (name is None or name in grants or repo is None):
            return None
        params = {"realm": f"{self.url}/token", "service": SERVICE}
        if name:
            params["scope"] = f"repository:{name}:pull"
        return _error(401, "UNAUTHORIZED", "authentication required", ("Bearer", params))

    def _basic_user(self, header: str) -> str | None:
        """The configured user a ``Basic`` header proves, or None."""
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except ValueError:
            return None
        return (
            user
            if user in self.users
            and secrets.compare_digest(self.users[user].encode(), password.encode())
            else None
        )

    def _token(self, request: Request) -> Response:
        """Docker's token endpoint: pull grants for the scopes asked, if allowed."""
        header = request.headers.get("authorization", "")
        user = self._basic_user(header)
        if header and user is None:
            return _error(401, "UNAUTHORIZED", "incorrect username or password")
        names = [
            scope.split(":")[1]
            for scope in request.query.get("scope", [])
            if scope.startswith("repository:") and scope.count(":") >= 2
        ]
        if user is None and any(self._is_private(name) for name in names):
            return _error(401, "UNAUTHORIZED", "authentication required for a private repository")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = frozenset(names)
        return Response.json({"token": token, "access_token": token, "expires_in": 300})

    def _is_private(self, name: str) -> bool:
        repo = self._repos.get(name)
        return repo is not None and repo.private

    def _repository_route(self, request: Request, match: re.Match[str]) -> Response:
        repo = self._repos.get(match["name"])
        if repo is None:
            return _error(404, "NAME_UNKNOWN", f"repository {match['name']} not known")
        if match["kind"] == "tags":
            return Response.json({"name": match["name"], "tags": sorted(repo.tags)})
        if match["kind"] == "blobs":
            return self._blob(request, repo, match["ref"])
        return self._manifest(request, repo, match["ref"])

    def _manifest(self, request: Request, repo: _Repository, reference: str) -> Response:
        digest = repo.tags.get(reference, reference)
        if digest not in repo.documents:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {reference} not known")
        accept = request.headers.get("accept", "")
        if accept and INDEX_TYPE not in accept and "manifest.list" not in accept:
            digest = repo.amd64.get(digest, digest)
        media_type, body = repo.documents[digest]
        return Response(
            body=body,
            headers=[("Content-Type", media_type), ("Docker-Content-Digest", digest)],
        )

    def _blob(self, request: Request, repo: _Repository, digest: str) -> Response:
        if digest not in repo.blobs:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} not known")
        if self.redirect_blobs:
            return Response(status=307, headers=[("Location", f"{self.url}/_blobs/{digest}")])
        return self._blob_response(repo.blobs[digest], digest)

    @staticmethod
    def _blob_response(data: bytes | None, digest: str) -> Response:
        if data is None:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} not known")
        headers = [("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", digest)]
        return Response(body=data, headers=headers)


def _error(
    status: int,
    code: str,
    message: str,
    challenge: tuple[str, Mapping[str, str]] | None = None,
) -> Response:
    headers = [("Docker-Distribution-API-Version", "registry/2.0")]
    if challenge is not None:
        scheme, params = challenge
        fields = ",".join(f'{key}="{value}"' for key, value in params.items())
        realm = fields or 'realm="vk-trio-sim"'
        headers.append(("WWW-Authenticate", f"{scheme} {realm}"))
    return Response.json(
        {"errors": [{"code": code, "message": message, "detail": None}]},
        status,
        headers=headers,
    )
