"""Where the cluster is and how to prove who we are: kubeconfig or in-cluster service account.

``load_config`` picks, in order: an explicit kubeconfig path, ``$KUBECONFIG``,
``~/.kube/config``, and otherwise the in-cluster service account. Kubeconfigs are read by the
``kubernetes`` package's loader (the one piece of that package vk-trio uses): it understands
every auth flavour (tokens, token files, client certificates, exec plugins, inline ``*-data``
written to 0600 temp files). It is imported lazily, because importing it costs ~0.4 s, and run
in a worker thread, because it reads files and may spawn an exec plugin.

Tokens that change are not frozen at start-up: ``ClusterConfig.token_provider`` is awaited per
request (with its own caching) so rotating service-account tokens and expiring exec-plugin
tokens keep working for a node that runs for months.

``make_http_client`` turns the config into an ``httpx.AsyncClient`` with TLS verification on.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from vk_trio.logs import redact

__all__ = [
    "MAX_IN_FLIGHT",
    "SERVICE_ACCOUNT_DIR",
    "WATCHES",
    "ClusterConfig",
    "ConfigError",
    "in_cluster_config",
    "load_config",
    "make_http_client",
]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

MAX_IN_FLIGHT = 8
"""Requests (not watches) on the wire at once. Eight keep a remote API server busy (a few ms
each) while the node's CPU, not the wire, is what limits it; more only made httpcore's
per-request scan of its connections dearer. ``KubeClient`` queues the rest."""

WATCHES = 2
"""Watch streams a node holds open (pods, Services), each on a connection of its own."""

TOKEN_REREAD_INTERVAL = 60.0
"""Seconds a service-account token read from disk is reused. The kubelet rotates projected
tokens well before expiry (at 80% of a >= 10 min lifetime), so a minute is always fresh enough."""

EXEC_REFRESH_INTERVAL = 10.0
"""Seconds between asking the kubeconfig loader whether its (exec/oidc) token expired; the
check itself is cheap, but it runs in a thread."""

TokenProvider = Callable[[], Awaitable[str | None]]


class ConfigError(Exception):
    """No usable cluster configuration (no kubeconfig and not running in a cluster)."""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Everything needed to open an authenticated connection to one apiserver."""

    server: str
    """Base URL, e.g. ``https://10.0.0.1:443`` (no trailing slash)."""
    ca_file: str | None = None
    """PEM bundle to verify the apiserver with; ``None`` = the system trust store."""
    ca_data: str | None = None
    """PEM text, an alternative to ``ca_file``."""
    verify: bool = True
    """``False`` only when the kubeconfig says ``insecure-skip-tls-verify``."""
    tls_server_name: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    token: str | None = None
    """A static bearer token (never logged: it is registered with ``logs.redact``)."""
    token_provider: TokenProvider | None = None
    """Awaited before each request for a current token; wins over ``token``."""
    namespace: str = "default"
    """The kubeconfig context's (or the service account's) namespace."""


async def load_config(
    *, kubeconfig: str | None = None, context: str | None = None
) -> ClusterConfig:
    """Find and load the cluster configuration (see the module docstring for the order).

    Raises ``ConfigError`` when nothing usable is found, or when the kubeconfig loader fails
    (its message says why: missing context, unreadable file, failing exec plugin...).
    """
    if kubeconfig is None and not os.environ.get("KUBECONFIG"):
        default = await trio.Path("~/.kube/config").expanduser()
        if await default.exists():
            kubeconfig = str(default)
    if kubeconfig is not None or os.environ.get("KUBECONFIG"):
        return await trio.to_thread.run_sync(_load_kubeconfig, kubeconfig, context)
    return await in_cluster_config()


def _load_kubeconfig(path: str | None, context: str | None) -> ClusterConfig:
    """Run the ``kubernetes`` loader (in a worker thread) and copy out what we need."""
    from kubernetes.client import Configuration
    from kubernetes.config import kube_config

    # The package reads $KUBECONFIG once at import; read it here so a changed env is seen.
    filename = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
    configuration = Configuration()
    try:
        loader = kube_config._get_kube_config_loader(  # type: ignore[no-untyped-call]
            filename=filename, active_context=context, persist_config=False
        )
        loader.load_and_set(configuration)
    except Exception as exc:  # the loader raises ConfigException, IOError, YAML errors...
        raise ConfigError(f"cannot load kubeconfig {filename}: {exc}") from exc
    namespace = loader.current_context.get("context", {}).get("namespace") or "default"

    def current_token() -> str | None:
        header = configuration.api_key.get("BearerToken") or configuration.api_key.get(
            "authorization"
        )
        if not header:
            return None
        token = str(header).removeprefix("Bearer ").strip()
        redact(token)
        return token

    token = current_token()
    provider: TokenProvider | None = None
    refresh = configuration.refresh_api_key_hook
    if refresh is not None and getattr(loader, "expiry", None) is not None:
        # Exec plugins and OIDC hand out expiring tokens; the loader's hook re-runs them
        # once expired. Ask it now and then, in a thread (it may spawn a process).
        def refreshed() -> str | None:
            refresh(configuration)
            return current_token()

        provider = _cached_provider(refreshed, EXEC_REFRESH_INTERVAL, token)

    return ClusterConfig(
        server=str(configuration.host).rstrip("/"),
        ca_file=configuration.ssl_ca_cert or None,
        verify=bool(configuration.verify_ssl),
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        client_cert_file=configuration.cert_file or None,
        client_key_file=configuration.key_file or None,
        token=token,
        token_provider=provider,
        namespace=namespace,
    )


def _cached_provider(
    fetch: Callable[[], str | None], interval: float, initial: str | None
) -> TokenProvider:
    """A provider that runs ``fetch`` in a thread at most every ``interval`` seconds."""
    state: dict[str, Any] = {"token": initial, "at": None}
    lock = trio.Lock()

    async def provide() -> str | None:
        async with lock:
            now = trio.current_time()
            if state["at"] is None or now - state["at"] >= interval:
                state["token"] = await trio.to_thread.run_sync(fetch)
                state["at"] = now
            token: str | None = state["token"]
            return token

    return provide


async def in_cluster_config(
    *, sa_dir: str = SERVICE_ACCOUNT_DIR, environ: dict[str, str] | None = None
) -> ClusterConfig:
    """The configuration a pod gets from its service account (no ``kubernetes`` import).

    The token is re-read from ``sa_dir/token`` at most every ``TOKEN_REREAD_INTERVAL``
    seconds, because bound service-account tokens rotate.
    """
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError(
            "no kubeconfig found and KUBERNETES_SERVICE_HOST is unset (not running in a cluster)"
        )
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    directory = trio.Path(sa_dir)
    token_path = directory / "token"
    ca_path = directory / "ca.crt"
    if not await token_path.exists():
        raise ConfigError(f"service account token {token_path} does not exist")
    namespace_path = directory / "namespace"
    namespace = "default"
    if await namespace_path.exists():
        namespace = (await namespace_path.read_text()).strip() or "default"

    def read_token() -> str | None:
        with open(token_path, encoding="utf-8") as handle:
            token = handle.read().strip()
        redact(token)
        return token or None

    initial = await trio.to_thread.run_sync(read_token)
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_file=str(ca_path) if await ca_path.exists() else None,
        token=initial,
        token_provider=_cached_provider(read_token, TOKEN_REREAD_INTERVAL, initial),
        namespace=namespace,
    )


class _BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` from a static token or an async provider."""

    def __init__(self, token: str | None, provider: TokenProvider | None) -> None:
        self._token = token
        self._provider = provider

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:  # pragma: no cover - async only
        raise RuntimeError("vk-trio only uses httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._provider() if self._provider is not None else self._token
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def ssl_context(config: ClusterConfig) -> ssl.SSLContext | bool:
    """The TLS settings for ``config``: a verifying context with its CA and client cert.

    Reads small files synchronously (CA, cert, key); call it once at start-up.
    """
    if not config.server.startswith("https://"):
        return False
    if not config.verify:
        return False
    context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
    if config.client_cert_file:
        context.load_cert_chain(config.client_cert_file, config.client_key_file)
    return context


def make_http_client(config: ClusterConfig, *, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``config``: base URL, TLS verification, bearer auth.

    Building the TLS context reads the CA/cert files (a few KB, once at start-up).
    """
    if config.token:
        redact(config.token)
    auth = None
    if config.token or config.token_provider:
        auth = _BearerAuth(config.token, config.token_provider)
    hooks: dict[str, list[Callable[[httpx.Request], Awaitable[None]]]] = {}
    server_name = config.tls_server_name
    if server_name:
        # kubeconfig ``tls-server-name``: verify (and send SNI for) this name instead of the
        # URL's host, e.g. when the apiserver is reached through an IP or a tunnel.
        async def set_server_name(request: httpx.Request) -> None:
            request.extensions["sni_hostname"] = server_name

        hooks["request"] = [set_server_name]
    return httpx.AsyncClient(
        base_url=config.server,
        verify=ssl_context(config),
        auth=auth,
        timeout=timeout,
        event_hooks=hooks,
        # KubeClient's requests in flight plus the node's watches, every one on a kept-alive
        # connection: closing the extra ones after each request cost a connect per request.
        # No more than that: httpcore scans its idle connections (quadratically) for every
        # request it queues or finishes, which cost a fifth of each request's CPU at 20.
        limits=httpx.Limits(
            max_connections=MAX_IN_FLIGHT + WATCHES,
            max_keepalive_connections=MAX_IN_FLIGHT + WATCHES,
        ),
    )
