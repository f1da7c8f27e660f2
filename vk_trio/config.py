"""Settings of a running node, from environment variables and matching command-line flags.

One table, ``Settings``, is the whole configuration: every field is a flag (``--poll-fast``)
and an environment variable (``POLL_FAST``), and its description is the ``--help`` text, so
the documentation cannot drift from the code. Flags override environment variables, which
override defaults; every default works for the documented deployment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import msgspec
from msgspec import Meta


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


class Settings(msgspec.Struct, kw_only=True):
    node_name: Annotated[str, Meta(description="the virtual node's name")] = "vast-gpu-node-python"
    vast_api_key: Annotated[
        str, Meta(description="Vast.ai API key (prefer the env var; never logged)")
    ] = ""
    vast_api_key_file: Annotated[
        str | None,
        Meta(
            description="file holding the API key, e.g. a mounted Secret; used when the key "
            "itself is not set"
        ),
    ] = None
    vast_api_url: Annotated[
        str, Meta(description="Vast API base URL (the simulator's in tests and the demo)")
    ] = "https://console.vast.ai"
    kubeconfig: Annotated[
        str | None,
        Meta(
            description="kubeconfig for running outside a cluster; unset: the in-cluster "
            "service account"
        ),
    ] = None
    pod_ip: Annotated[str, Meta(description="this process's address: the node's InternalIP")] = (
        "127.0.0.1"
    )
    health_host: Annotated[str, Meta(description="address of the probe server")] = "0.0.0.0"
    health_port: Annotated[
        int, Meta(description="port of /healthz and /readyz (the probes use it)")
    ] = 10255
    kubelet_port: Annotated[
        int, Meta(description="kubelet API port advertised in the node's daemonEndpoints")
    ] = 10250
    log_level: Annotated[
        str, Meta(description="DEBUG, INFO, WARNING or ERROR (RUST_LOG=debug also works)")
    ] = "INFO"
    poll_fast: Annotated[
        float, Meta(description="seconds between instance sweeps while any instance boots")
    ] = 2.0
    poll_slow: Annotated[
        float,
        Meta(
            description="seconds between instance sweeps when all is steady; exits are "
            "noticed within this"
        ),
    ] = 15.0
    startup_timeout: Annotated[
        float,
        Meta(
            description="seconds an instance may take to reach running before it is destroyed "
            "and another machine tried; a pod's vast.ai/startup-timeout overrides it"
        ),
    ] = 900.0
    destroy_timeout: Annotated[
        float, Meta(description="deadline of one shielded destroy attempt, in seconds")
    ] = 60.0
    backoff_first: Annotated[
        float,
        Meta(
            description="first wait before retrying what failed for a pod (no offers, a crash, "
            "a failed destroy); doubled each time"
        ),
    ] = 15.0
    backoff_cap: Annotated[
        float, Meta(description="longest wait between a pod's retries, in seconds")
    ] = 300.0
    reap_interval: Annotated[
        float,
        Meta(description="seconds between orphan sweeps; an orphan is destroyed on its second"),
    ] = 60.0
    lease_seconds: Annotated[
        int, Meta(description="node Lease duration; renewed every quarter of it")
    ] = 40
    max_pods: Annotated[int, Meta(description="the node's advertised pods capacity")] = 5000
    gpu_capacity: Annotated[
        int, Meta(description="the node's advertised nvidia.com/gpu capacity")
    ] = 1000
    max_hourly_spend: Annotated[
        float | None,
        Meta(
            description="USD per hour this node's instances may cost together; pods beyond "
            "it wait with SpendCapReached (unset: no cap)"
        ),
    ] = None
    max_instances: Annotated[
        int | None,
        Meta(
            description="instances this node may hold at once; pods beyond it wait with "
            "SpendCapReached (unset: no cap)"
        ),
    ] = None
    vast_attempts: Annotated[
        int, Meta(description="tries per Vast call (429/5xx/timeouts) before backing off")
    ] = 5
    pacing: Annotated[
        float | None,
        Meta(
            description="multiplier of Vast's minimum call intervals (0 disables pacing, for "
            "simulators without rate limits)"
        ),
    ] = None
    log_format: Annotated[
        Literal["json", "text"],
        Meta(
            description="json: one flat JSON object per line (time, level, msg, logger, pod, "
            "uid, instance_id...) for collectors and jq; text: a short human format"
        ),
    ] = "json"
    kubelet_host: Annotated[
        str, Meta(description="address the kubelet API (HTTPS, kubectl logs) listens on")
    ] = "0.0.0.0"
    tls_cert_file: Annotated[
        str | None,
        Meta(
            description="the kubelet API's serving certificate (PEM, e.g. from a Secret); unset: "
            "requested with a kubelet-serving CSR, self-signed until approved"
        ),
    ] = None
    tls_private_key_file: Annotated[
        str | None, Meta(description="the private key of --tls-cert-file (PEM)")
    ] = None
    client_ca_file: Annotated[
        str | None,
        Meta(
            description="CA bundle that client certificates of the kubelet API must chain to "
            "(the API server's kubelet client); unset: the cluster CA of the kubeconfig or "
            "service account"
        ),
    ] = None

    def __repr__(self) -> str:  # the API key must never reach a log line
        return f"Settings(node_name={self.node_name!r}, vast_api_url={self.vast_api_url!r})"


_HIDDEN_FROM_FLAGS = {"vast_api_key"}
"""Settable by env var only: a flag would put the key in ``ps`` output and shell history."""


def _fields() -> list[tuple[str, str, Any]]:
    """(name, description, default) of every setting, in declaration order."""
    hints = get_type_hints(Settings, include_extras=True)
    described = []
    for field in msgspec.structs.fields(Settings):
        meta = next(m for m in get_args(hints[field.name]) if isinstance(m, Meta))
        described.append((field.name, meta.description or "", field.default))
    return described


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting (``--node-name`` ↔ ``NODE_NAME``), help text from its table."""
    group = parser.add_argument_group(
        "settings",
        "Each flag can instead be set by the environment variable shown as its value, e.g. "
        "NODE_NAME. The API key is read from VAST_API_KEY (env only, so that it never shows "
        "in a process list) or from the file named by --vast-api-key-file.",
    )
    for name, description, default in _fields():
        if name in _HIDDEN_FROM_FLAGS:
            continue
        shown = "unset" if default is None else default
        group.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            metavar=name.upper(),
            help=f"{description} (default: {shown})",
        )


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) overridden by parsed ``args``.

    Raises ``ConfigError`` naming the setting when a value has the wrong type or the key
    file cannot be read.
    """
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for name, _, _ in _fields():
        raw = getattr(args, name, None) if args is not None else None
        if raw is None:
            raw = environ.get(name.upper()) or None
        if raw is not None:
            values[name] = raw
    if "log_level" not in values and environ.get("RUST_LOG"):
        # The seed README's troubleshooting says RUST_LOG=debug; keep that working.
        values["log_level"] = _rust_log_level(environ["RUST_LOG"])
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # "Expected `float`, got `str` - at `$.poll_fast`": name the env var the user set.
        raise ConfigError(f"invalid setting: {_env_names(str(exc))}") from None
    if not settings.vast_api_key and settings.vast_api_key_file:
        settings.vast_api_key = _read_key(settings.vast_api_key_file)
    return settings


def _rust_log_level(value: str) -> str:
    """``debug`` from ``debug`` or ``vk=debug,hyper=info``: the most verbose level named."""
    levels = ["trace", "debug", "info", "warn", "error"]
    named = [part.rsplit("=", 1)[-1].strip().lower() for part in value.split(",")]
    known = [level for level in named if level in levels] or ["info"]
    best = min(known, key=levels.index)
    return {"trace": "DEBUG", "warn": "WARNING"}.get(best, best.upper())


def _env_names(message: str) -> str:
    for name, _, _ in _fields():
        message = message.replace(f"`$.{name}`", f"{name.upper()} (--{name.replace('_', '-')})")
    return message


def _read_key(path: str) -> str:
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"VAST_API_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"VAST_API_KEY_FILE: {path} is empty")
    return key
