"""Settings of a running node, from environment variables and matching command-line flags.

Every field has a default that works for the documented deployment, and a docstring that says
why it has that value. Flags override environment variables, which override defaults.
"""

from __future__ import annotations

import argparse
import os

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    node_name: str = "vast-gpu-node-python"
    """``NODE_NAME``: the virtual node's name (the seed's default)."""
    vast_api_key: str = ""
    """``VAST_API_KEY``: required against the real API; never logged (``repr`` hides it)."""
    vast_api_url: str = "https://console.vast.ai"
    """``VAST_API_URL``: the Vast API base; the simulators' URL in tests and the demo."""
    kubeconfig: str | None = None
    """``KUBECONFIG``: out-of-cluster config; unset means the in-cluster service account."""
    pod_ip: str = "127.0.0.1"
    """``POD_IP``: this process's address, published as the node's InternalIP."""
    health_host: str = "0.0.0.0"
    health_port: int = 10255
    """``HEALTH_PORT``: ``/healthz`` and ``/readyz`` (the seed's port, used by the probes)."""
    kubelet_port: int = 10250
    """Advertised in ``daemonEndpoints`` so the API server knows where the kubelet API lives."""
    log_level: str = "INFO"
    poll_fast: float = 2.0
    """Seconds between instance sweeps while any instance boots (Vast allows one list/s)."""
    poll_slow: float = 15.0
    """Seconds between sweeps when everything is steady; exits are noticed within this."""
    boot_timeout: float = 1200.0
    """An instance not running after this long is destroyed and another offer bought
    (Vast says boots take 1-5 min; large images take longer)."""
    destroy_timeout: float = 60.0
    """Deadline of one shielded destroy attempt; failed attempts are retried with backoff."""
    backoff_first: float = 15.0
    """First wait before retrying what failed for a pod (no offers yet, a crashed container,
    a failed destroy); doubled each time up to ``backoff_cap``."""
    backoff_cap: float = 300.0
    """Longest wait between retries: a pod waiting for offers re-searches at least this often."""
    reap_interval: float = 60.0
    """Seconds between orphan sweeps; an orphan is destroyed on its second sweep."""
    lease_seconds: int = 40
    """Node Lease duration; renewed every quarter of it (the kubelet's 40 s / 10 s)."""
    max_pods: int = 5000
    """Advertised ``pods`` capacity of the node."""
    gpu_capacity: int = 1000
    """Advertised ``nvidia.com/gpu`` capacity: the marketplace, not a machine, is the limit."""
    vast_attempts: int = 5
    """Tries per Vast call (429/5xx/timeouts) before the caller's own backoff takes over."""
    pacing: float | None = None
    """Multiplier of Vast's documented minimum call intervals; None keeps the pacer's default
    (a little above the thresholds), 0 disables pacing (simulators without rate limits)."""

    def __repr__(self) -> str:  # the API key must never reach a log line
        return f"Settings(node_name={self.node_name!r}, vast_api_url={self.vast_api_url!r})"


_ENV = {
    "node_name": "NODE_NAME",
    "vast_api_key": "VAST_API_KEY",
    "vast_api_url": "VAST_API_URL",
    "kubeconfig": "KUBECONFIG",
    "pod_ip": "POD_IP",
    "health_port": "HEALTH_PORT",
    "kubelet_port": "KUBELET_PORT",
    "log_level": "LOG_LEVEL",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every setting named in ``_ENV`` (``--node-name`` ↔ ``NODE_NAME``…)."""
    for name, env in _ENV.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            help=f"(env {env})" if name != "vast_api_key" else f"(env {env}; prefer the env var)",
        )
    parser.add_argument("--poll-fast", type=float, default=None)
    parser.add_argument("--poll-slow", type=float, default=None)


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) overridden by parsed ``args``."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for name, env in _ENV.items():
        raw = getattr(args, name, None) if args is not None else None
        if raw is None:
            raw = environ.get(env) or None
        if raw is not None:
            values[name] = raw
    for name in ("poll_fast", "poll_slow"):
        raw = getattr(args, name, None) if args is not None else None
        if raw is not None:
            values[name] = raw
    return msgspec.convert(values, Settings, strict=False)
