"""Settings of a running node, from environment variables and matching command-line flags.

One table, ``Settings``, is the whole configuration: every field is a flag (``--poll-fast``)
and an environment variable (``POLL_FAST``), and its description is the ``--help`` text, so
the documentation cannot drift from the code. Flags override environment variables, which
override defaults; every default works for the documented deployment.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from types import UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    NamedTuple,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec
from msgspec import Meta

from vk_trio.logs import LOG_LEVELS, rust_log_level


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


_SECONDS = {"unit": "seconds"}
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_KEY = r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_LABEL = f"{_KEY}={_VALUE}"
_TAINT = f"{_KEY}(={_VALUE})?:(NoSchedule|PreferNoSchedule|NoExecute)"
_LABELS = f"^{_LABEL}(,{_LABEL})*$"
_TAINTS = f"^{_TAINT}(,{_TAINT})*$"


class Settings(msgspec.Struct, kw_only=True):
    """The whole configuration; each field's ``Meta`` holds its range, unit and help text.

    The ranges are checked when settings come from a user (``load``: env vars and flags);
    code that builds ``Settings`` itself (the demo, tests) is trusted, and may for instance
    pass ``health_port=0`` to have a free port picked, which no user wants for a probe port.
    """

    node_name: Annotated[
        str,
        Meta(
            max_length=253,
            pattern=_DNS_SUBDOMAIN,
            description="the virtual node's name",
            extra={"allowed": "lowercase letters, digits, '-' and '.', at most 253 characters"},
        ),
    ] = "vast-gpu-node-python"
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
        str,
        Meta(
            pattern="^https?://[^/]",
            description="Vast API base URL (the simulator's in tests and the demo)",
            extra={"allowed": "an http:// or https:// URL"},
        ),
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
        int,
        Meta(
            ge=1,
            le=65535,
            description="port of /healthz and /readyz (the probes use it)",
        ),
    ] = 10255
    kubelet_port: Annotated[
        int,
        Meta(
            ge=1,
            le=65535,
            description="kubelet API port advertised in the node's daemonEndpoints",
        ),
    ] = 10250
    log_level: Annotated[
        str,
        Meta(
            description="TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL, any case; warn, err "
            "and fatal work too, and so does RUST_LOG=debug",
            extra={"allowed": "one of " + ", ".join(LOG_LEVELS) + " (any case)"},
        ),
    ] = "INFO"
    poll_fast: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds between sweeps of the booting instances (one list filtered "
            "on their statuses) while any boots",
            extra=_SECONDS,
        ),
    ] = 2.0
    poll_slow: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds between full sweeps of every instance (one list call per "
            "25); exits are noticed within this; at least POLL_FAST",
            extra=_SECONDS,
        ),
    ] = 15.0
    startup_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds an instance may take to reach running before it is destroyed "
            "and another machine tried; a pod's vast.ai/startup-timeout overrides it",
            extra=_SECONDS,
        ),
    ] = 900.0
    destroy_timeout: Annotated[
        float,
        Meta(
            gt=0,
            description="deadline of one shielded destroy attempt, in seconds",
            extra=_SECONDS,
        ),
    ] = 60.0
    backoff_first: Annotated[
        float,
        Meta(
            gt=0,
            description="first wait before retrying what failed for a pod (no offers, a crash, "
            "a failed destroy); doubled each time",
            extra=_SECONDS,
        ),
    ] = 15.0
    backoff_cap: Annotated[
        float,
        Meta(
            gt=0,
            description="longest wait between a pod's retries, in seconds; at least BACKOFF_FIRST",
            extra=_SECONDS,
        ),
    ] = 300.0
    backoff_reset: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds an instance must run for its exit not to count as a crash "
            "loop (the crash backoff starts over; the kubelet's 10 minutes)",
            extra=_SECONDS,
        ),
    ] = 600.0
    machine_failures: Annotated[
        int,
        Meta(
            ge=1,
            description="boots that may fail in a row, each on another machine, before the "
            "container is blamed (StartError): a bad image fails on every host",
            extra={"unit": "machines"},
        ),
    ] = 3
    visibility_grace: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds a just-bought instance may be missing from Vast's list "
            "before it counts as lost",
            extra=_SECONDS,
        ),
    ] = 90.0
    offline_grace: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds an instance may stay offline/stopped before it is replaced "
            "(Vast hosts blip)",
            extra=_SECONDS,
        ),
    ] = 600.0
    reap_interval: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds between orphan sweeps; an orphan is destroyed on its second",
            extra=_SECONDS,
        ),
    ] = 60.0
    lease_seconds: Annotated[
        int,
        Meta(
            ge=10,
            le=120,
            description="node Lease duration, renewed every quarter of it: every 2.5 to 30 s, "
            "inside the control plane's 40 s grace period",
            extra=_SECONDS,
        ),
    ] = 40
    max_pods: Annotated[
        int, Meta(ge=1, description="the node's advertised pods capacity", extra={"unit": "pods"})
    ] = 5000
    gpu_capacity: Annotated[
        int,
        Meta(
            ge=1,
            description="the node's advertised nvidia.com/gpu capacity",
            extra={"unit": "GPUs"},
        ),
    ] = 1000
    max_hourly_spend: Annotated[
        Annotated[float, Meta(ge=0)] | None,
        Meta(
            description="USD per hour this node's instances may cost together; pods beyond "
            "it wait with SpendCapReached (unset: no cap; 0: buy nothing)",
            extra={"unit": "USD per hour"},
        ),
    ] = None
    max_instances: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description="instances this node may hold at once; pods beyond it wait with "
            "SpendCapReached (unset: no cap; 0: buy nothing)",
            extra={"unit": "instances"},
        ),
    ] = None
    credit_stop_hours: Annotated[
        float,
        Meta(
            ge=0,
            description="stop buying when the account's credit would last less than this at "
            "the node's spend plus the pod's price: pods wait with CreditLow, /readyz and a "
            "Node Event say so, buying resumes when credit is added (0: only when it is gone)",
            extra={"unit": "hours"},
        ),
    ] = 1.0
    credit_warn_hours: Annotated[
        float,
        Meta(
            ge=0,
            description="a Warning Event on the Node when the account's credit would last "
            "less than this at the node's current spend (at least CREDIT_STOP_HOURS)",
            extra={"unit": "hours"},
        ),
    ] = 6.0
    vast_attempts: Annotated[
        int,
        Meta(
            ge=1,
            description="tries per Vast call (429/5xx/timeouts) before backing off",
            extra={"unit": "tries"},
        ),
    ] = 5
    pacing: Annotated[
        Annotated[float, Meta(ge=0)] | None,
        Meta(
            description="multiplier of Vast's minimum call intervals (0 disables pacing, for "
            "simulators without rate limits; unset: 1.1); N processes on one API key: 1.1 x N "
            "each",
            extra={"unit": "a multiplier"},
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

    agent_url: Annotated[
        Annotated[str, Meta(pattern=r"^https?://\S+$")] | None,
        Meta(
            description="where instances download the vk-trio agent (this same binary) that "
            "runs the pod inside them: its volumes, init containers, exec probes, Secret env, "
            "restarts in place; unset: the layer of AGENT_IMAGE (the node's own image) that "
            "holds it",
            extra={"allowed": "an http(s) URL the instances can reach"},
        ),
    ] = None
    agent_sha256: Annotated[
        Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None,
        Meta(
            description="the SHA-256 of what AGENT_URL serves, checked inside every instance "
            "before it runs; unset: this binary's own digest (the agent is the node's own "
            "binary), or, when not run as the binary, the digest of AGENT_URL read at start",
            extra={"allowed": "64 lowercase hex digits"},
        ),
    ] = None

    agent_image: Annotated[
        str | None,
        Meta(
            description="the image whose layer holds /vk-trio, from which instances fetch the "
            "agent when AGENT_URL is unset (anonymously: a public image); unset: the node's "
            "own image, read from its pod (POD_NAMESPACE/POD_NAME)",
            extra={"allowed": "an image reference, best by digest (name@sha256:...)"},
        ),
    ] = None

    node_labels: Annotated[
        Annotated[str, Meta(pattern=_LABELS)] | None,
        Meta(
            description="labels added to the node's own, e.g. vast.ai/region=eu,price-class=spot: "
            "pods pick a node by them (nodeSelector, affinity, topology spread)",
            extra={"allowed": "key=value pairs separated by commas"},
        ),
    ] = None
    node_taints: Annotated[
        Annotated[str, Meta(pattern=_TAINTS)] | None,
        Meta(
            description="taints added to virtual-kubelet.io/provider=vast:NoSchedule, e.g. "
            "price-class=spot:NoSchedule: only pods that tolerate them land here",
            extra={
                "allowed": "key=value:effect items separated by commas; effect NoSchedule, "
                "PreferNoSchedule or NoExecute"
            },
        ),
    ] = None
    leader_elect: Annotated[
        bool,
        Meta(
            description="run as one of several replicas: only the holder of the Lease "
            "vk-trio-NODE_NAME drives the node, the others stand by and take over",
            extra={"allowed": "true or false (the flag alone means true)"},
        ),
    ] = False
    leader_elect_namespace: Annotated[
        str,
        Meta(
            max_length=63,
            pattern=_DNS_LABEL,
            description="namespace of the leader-election Lease (the Deployment's own)",
            extra={"env": "POD_NAMESPACE", "allowed": "a namespace name"},
        ),
    ] = "kube-system"
    leader_elect_identity: Annotated[
        str | None,
        Meta(
            description="this replica's name in the Lease's holderIdentity (the pod name); "
            "unset: hostname and a random suffix",
            extra={"env": "POD_NAME"},
        ),
    ] = None
    leader_elect_lease_duration: Annotated[
        int,
        Meta(
            ge=2,
            le=60,
            description="seconds a standby waits after the leader's last renewal before it "
            "takes over (client-go's 15 s)",
            extra=_SECONDS,
        ),
    ] = 15
    leader_elect_renew_deadline: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds the leader may fail to renew before it stops driving; "
            "below LEADER_ELECT_LEASE_DURATION (client-go's 10 s)",
            extra=_SECONDS,
        ),
    ] = 10.0
    leader_elect_retry_period: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds between election attempts and renewals (client-go's 2 s)",
            extra=_SECONDS,
        ),
    ] = 2.0

    def __repr__(self) -> str:  # the API key must never reach a log line
        return f"Settings(node_name={self.node_name!r}, vast_api_url={self.vast_api_url!r})"


_HIDDEN_FROM_FLAGS = {"vast_api_key"}
"""Settable by env var only: a flag would put the key in ``ps`` output and shell history."""


class _Field(NamedTuple):
    """One row of the ``Settings`` table, as the flags, the help and the errors need it."""

    name: str
    description: str
    default: Any
    kind: type
    """``int``, ``float`` or ``str`` (the type inside ``X | None``)."""
    limits: Meta
    """The range (``ge``/``gt``/``le``); an empty ``Meta`` when the field has none."""
    extra: dict[str, Any]
    """``unit`` (shown after the range) or ``allowed`` (a text instead of a range)."""

    @property
    def env(self) -> str:
        """``POLL_FAST`` for ``poll_fast``; a few read the name Kubernetes gives them
        (``POD_NAMESPACE``, ``POD_NAME`` from the downward API)."""
        return str(self.extra.get("env", self.name.upper()))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range(self) -> str:
        """The allowed values, short: ``> 0``, ``1-65535``, ``>= 0``; ``""`` when unbounded."""
        low = self.limits.ge if self.limits.ge is not None else self.limits.gt
        high = self.limits.le
        if self.limits.ge is not None and high is not None:
            return f"{self.limits.ge}-{high}"
        if low is not None:
            return f"{'>=' if self.limits.ge is not None else '>'} {low}"
        return ""

    def allowed(self) -> str:
        """What a user may set, in words: ``a number > 0 (seconds)``."""
        if "allowed" in self.extra:
            return str(self.extra["allowed"])
        kind = {int: "an integer", float: "a finite number", bool: "true or false"}.get(
            self.kind, "text"
        )
        limits = self.range()
        if limits and self.limits.ge is not None and self.limits.le is not None:
            limits = f"from {self.limits.ge} to {self.limits.le}"
        unit = f" ({self.extra['unit']})" if "unit" in self.extra else ""
        return f"{kind} {limits}".rstrip() + unit


def _fields() -> list[_Field]:
    """Every setting, in declaration order, with its description, default and range."""
    hints = get_type_hints(Settings, include_extras=True)
    described = []
    for field in msgspec.structs.fields(Settings):
        outer, *metas = get_args(hints[field.name])
        meta = next(m for m in metas if isinstance(m, Meta))
        kind, limits = outer, meta
        if get_origin(outer) in (Union, UnionType):  # ``Annotated[float, Meta(ge=0)] | None``
            inner = next(arg for arg in get_args(outer) if arg is not type(None))
            kind, limits = get_args(inner) if get_origin(inner) is Annotated else (inner, Meta())
        described.append(
            _Field(
                field.name, meta.description or "", field.default, kind, limits, meta.extra or {}
            )
        )
    return described


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting (``--node-name`` ↔ ``NODE_NAME``), help text from its table."""
    group = parser.add_argument_group(
        "settings",
        "Each flag can instead be set by the environment variable shown as its value, e.g. "
        "NODE_NAME; a flag wins over its variable. The API key is read from VAST_API_KEY (env "
        "only, so that it never shows in a process list) or from the file named by "
        "--vast-api-key-file. A value out of range stops the node at start, naming it.",
    )
    for field in _fields():
        if field.name in _HIDDEN_FROM_FLAGS:
            continue
        shown = "unset" if field.default is None else field.default
        limits = field.range()
        group.add_argument(
            field.flag,
            default=None,
            metavar=field.env,
            # A bool flag alone means true (``--leader-elect``), as Go's flags do.
            nargs="?" if field.kind is bool else None,
            const="true" if field.kind is bool else None,
            help=f"{field.description} ({limits + '; ' if limits else ''}default: {shown})",
        )


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) overridden by parsed ``args``.

    Raises ``ConfigError`` with one line naming the setting (env var and flag), the value
    given and what is allowed, when a value has the wrong type or is out of range, or when
    the key file cannot be read.
    """
    environ = dict(os.environ if environ is None else environ)
    fields = {field.name: field for field in _fields()}
    values = _given(fields, args, environ)
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says "Expected `float` > 0.0 - at `$.poll_fast`": say it in the user's terms.
        path = re.search(r"at `\$\.(\w+)`", str(exc))
        if path is None:  # pragma: no cover - every field error carries its path
            raise ConfigError(f"invalid settings: {exc}") from None
        field = fields[path.group(1)]
        raise _invalid(field, values[field.name]) from None
    _check_ranges(settings, fields, values)
    if settings.leader_elect:
        _check_election(settings, fields)
    if not settings.vast_api_key and settings.vast_api_key_file:
        settings.vast_api_key = _read_key(settings.vast_api_key_file)
    return settings


def _given(
    fields: dict[str, _Field], args: argparse.Namespace | None, environ: dict[str, str]
) -> dict[str, str]:
    """The raw value of each setting given, a flag winning over its env var; the log level
    normalised (``RUST_LOG`` too, as the seed README's troubleshooting says)."""
    values: dict[str, str] = {}
    for name in fields:
        raw = getattr(args, name, None) if args is not None else None
        if raw is None:
            raw = environ.get(fields[name].env) or None
        if raw is not None:
            values[name] = raw
    if "log_level" in values:
        level = LOG_LEVELS.get(values["log_level"].strip().lower())
        if level is None:
            raise _invalid(fields["log_level"], values["log_level"])
        values["log_level"] = level
    elif environ.get("RUST_LOG"):
        values["log_level"] = rust_log_level(environ["RUST_LOG"])
    return values


def _check_ranges(settings: Settings, fields: dict[str, _Field], values: dict[str, str]) -> None:
    """No infinite number, and every lower bound below its upper one."""
    for field in fields.values():
        value = getattr(settings, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid(field, values[field.name])
    pairs = (
        ("poll_fast", "poll_slow"),
        ("backoff_first", "backoff_cap"),
        ("credit_stop_hours", "credit_warn_hours"),
    )
    for lower, upper in pairs:
        if getattr(settings, upper) < getattr(settings, lower):
            field = fields[upper]
            raise ConfigError(
                f"invalid setting {field.env} ({field.flag}): {getattr(settings, upper)} is "
                f"below {lower.upper()} ({getattr(settings, lower)}); allowed: at least "
                f"{lower.upper()}"
            )


def _invalid(field: _Field, raw: str) -> ConfigError:
    return ConfigError(
        f"invalid setting {field.env} ({field.flag}): {raw!r} is not allowed; allowed: "
        f"{field.allowed()}"
    )


def _read_key(path: str) -> str:
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"VAST_API_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"VAST_API_KEY_FILE: {path} is empty")
    return key


ELECTION_JITTER = 1.2
"""client-go's ``JitterFactor``: the renew deadline must exceed this many retry periods."""


def _check_election(settings: Settings, fields: dict[str, _Field]) -> None:
    """The election's timings must fence a lost leader and let a standby take over in time.

    As client-go: retry period x 1.2 < renew deadline < lease duration (a leader stops driving
    before anyone may take its Lease). And ours: a standby must own the node before the node
    Lease, last renewed up to a quarter of LEASE_SECONDS before the leader died, runs out.
    """
    lease = settings.leader_elect_lease_duration
    renew = settings.leader_elect_renew_deadline
    retry = settings.leader_elect_retry_period
    problem = None
    if not renew < lease:
        problem = ("leader_elect_renew_deadline", f"below LEADER_ELECT_LEASE_DURATION ({lease})")
    elif not retry * ELECTION_JITTER < renew:
        problem = (
            "leader_elect_retry_period",
            f"below LEADER_ELECT_RENEW_DEADLINE / {ELECTION_JITTER} ({renew / ELECTION_JITTER:g})",
        )
    elif not lease + 2 * retry + settings.lease_seconds / 4 < settings.lease_seconds:
        room = settings.lease_seconds * 3 / 4 - 2 * retry
        problem = (
            "leader_elect_lease_duration",
            f"below {room:g}, so that a standby takes over before the node Lease "
            f"(LEASE_SECONDS={settings.lease_seconds}) runs out",
        )
    if problem is not None:
        field = fields[problem[0]]
        raise ConfigError(
            f"invalid setting {field.env} ({field.flag}): {getattr(settings, field.name)} is "
            f"not allowed with LEADER_ELECT; allowed: {problem[1]}"
        )


def parse_labels(text: str | None) -> dict[str, str]:
    """``{"a": "b", "c": ""}`` from ``NODE_LABELS``' ``a=b,c=`` (already checked by ``load``)."""
    pairs = (item.partition("=") for item in (text or "").split(",") if item)
    return {key: value for key, _, value in pairs}


def parse_taints(text: str | None) -> list[tuple[str, str, str]]:
    """``[(key, value, effect)]`` from ``NODE_TAINTS``' ``key=value:Effect,key:Effect``."""
    taints = []
    for item in filter(None, (text or "").split(",")):
        pair, _, effect = item.rpartition(":")
        key, _, value = pair.partition("=")
        taints.append((key, value, effect))
    return taints
