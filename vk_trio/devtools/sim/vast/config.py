"""The simulator's settings and the real API's limits it enforces: ``VastSimConfig``, ``Faults``."""

from __future__ import annotations

import msgspec

RATE_LIMITS: dict[str, float] = {
    "PUT /api/v0/asks/{id}/": 4.5,
    "GET /api/v0/instances/{id}/": 2.0,
    "PUT /api/v0/instances/{id}/": 1.0,
    "PUT /api/v0/instances/bid_price/{id}/": 1.0,
    "DELETE /api/v0/instances/{id}/": 3.0,
    "GET /api/v1/instances/": 1.0,
    "POST /api/v0/bundles/": 2.0,
    "GET /api/v0/bundles/": 2.0,
    "PUT /api/v0/search/asks/": 2.0,
    "GET /api/v0/instances/": 20.0,
}
"""Minimum seconds between calls per endpoint and identity (the ``x-rateLimit`` thresholds)."""


BURSTS: dict[str, int] = {
    "POST /api/v0/bundles/": 3,
    "GET /api/v0/bundles/": 3,
    "PUT /api/v0/search/asks/": 3,
}
"""Calls allowed back to back before the interval applies: search is ``low_volume_burst``."""


LOG_POLLS_BEFORE_READY = 1
"""Log URLs answer 404 this many times first, as S3 does until the host has uploaded them."""


LOG_POLLS_WHEN_SLOW = 20
"""With the ``logs_slow`` fault: 404s before the upload appears (a busy host)."""


PAGE_SIZE = 25
"""``GET /api/v1/instances/`` returns at most this many rows per page."""


WALK_SECONDS = 10.0
"""How long the pages after a listing's first follow the rows that page found (membership and
order; each row is rendered as it is when its page is asked); a page asked later starts a
fresh walk from its cursor. The real API's keyset pages are each a fresh query: an
instance created or booted mid-walk shows in the next listing here, not in this one."""


WALKS_KEPT = 16
"""Listings under way remembered at once (by filters and order)."""


OCI_FAILURE_TEMPLATE = (
    "Error response from daemon: failed to create task for container: failed to create shim "
    "task: OCI runtime create failed: runc create failed: unable to start container process: "
    'exec: "{command}": executable file not found in $PATH: unknown'
)


class Faults(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What goes wrong, and how often. Rates are probabilities in 0..1 drawn from a seeded RNG.

    Request-level faults (``rate_429``, ``rate_5xx``, ``latency``) hit every ``/api/`` call.
    Create-level faults are drawn once per create call; instance-level ones once per instance,
    at creation, so an instance's fate is fixed from its birth and reproducible.
    """

    rate_429: float = 0.0
    """Answer 429 ``rate_limit_exceeded`` regardless of the real limiter."""
    rate_5xx: float = 0.0
    """Answer 500/502/503 without doing anything."""
    latency: float = 0.0
    """Seconds added before every API answer."""
    offer_taken: float = 0.0
    """The offer was bought by someone else between search and create: 404 ``no_such_ask``."""
    lose_create_response: float = 0.0
    """The instance is created, but the client gets a 502 instead of the answer."""
    stuck_loading: float = 0.0
    """The instance never leaves ``loading``."""
    oci_failure: float = 0.0
    """The instance stays ``created`` with "OCI runtime create failed" in ``status_msg``."""
    host_offline: float = 0.0
    """The host goes ``offline`` one to three boot times after the instance is running."""
    instance_exit: float = 0.0
    """The container exits (``exited``, code 1) one to three boot times after running."""
    logs_slow: float = 0.0
    """A ``request_logs`` result URL answers 404 for ``LOG_POLLS_WHEN_SLOW`` polls first."""
    logs_missing: float = 0.0
    """A ``request_logs`` result is never uploaded: its URL answers 404 forever."""


class VastSimConfig(msgspec.Struct, kw_only=True):
    """How a simulator behaves; everything has a default suited to interactive use."""

    seed: int = 0
    """Seeds the marketplace, ids, ports, keys and fault draws."""
    boot_seconds: float = 3.0
    """Seconds from create to ``running`` (the real API takes minutes)."""
    api_key: str | None = None
    """The only key accepted; None accepts any non-empty key (a missing key is still 401)."""
    rate_limits: str = "real"
    """``real`` (the API's intervals), ``off``, or a factor such as ``0.01`` for fast tests."""
    offers_path: str | None = None
    """A JSON list of offers to use as the market, as it is; None uses the packaged seeded one."""
    faults: Faults = Faults()
    credit: float = 1_000_000.0
    """The account's credit in USD at start, billed down as instances run (``billing``);
    large by default so that only a test that means to runs out."""
    log_interval: float = 5.0
    """Seconds of run time per line a running container adds to its logs."""
    serve_ports: bool = False
    """Make each running instance really answer on its mapped ports: ``public_ipaddr`` is
    127.0.0.1 and every mapped TCP port is a loopback HTTP listener (``AppPorts``)."""
    app_ready_after: float = 0.0
    """With ``serve_ports``: seconds after ``running`` during which the app answers 503
    (a model still loading), then 200 on any path."""
    run_containers: bool = False
    """Run each instance's process for real, in a rootless sandbox (``containers``): argv
    ``[onstart, *args]``, its output is the log, its exit the instance's ``exited``, and the
    mapped ports reach it. Without ``unshare`` or user namespaces it falls back to
    ``serve_ports`` (one log line says what is missing)."""
    image_roots: dict[str, str] = msgspec.field(default_factory=dict)
    """With ``run_containers``: image name → a directory that is the root filesystem of the
    instances whose image it names (read-only, with a writable tmpfs layer; nothing of the
    host's userland); a name without a tag matches every tag, the longest name wins
    (``images.py``). Images named by none run on the host's userland."""
    image_configs: dict[str, str] = msgspec.field(default_factory=dict)
    """Image name → a JSON file with the image's OCI config (``{"config": {"Entrypoint":
    [...], "Cmd": [...], "Env": [...], "WorkingDir": ..., "User": ...}}``), used as Docker
    does when a create has no ``onstart``; a root's own ``.vk-trio-image-config.json``
    serves when no name here matches."""
    reachable: list[int] = msgspec.field(default_factory=list)
    """With ``run_containers``: ports of the host's loopback that a sandbox reaches too, at
    the same 127.0.0.1 port inside (relayed like the simulator's own), e.g. a registry
    simulator that instances fetch the agent's layer from."""
    serve_files: dict[str, str] = msgspec.field(default_factory=dict)
    """URL path → file: ``GET`` on the path answers the file's bytes (no auth), e.g. an
    agent binary a bootstrap script inside an instance downloads."""


def rate_factor(mode: str) -> float:
    """``real`` → 1, ``off`` → 0, a number → that factor (``ValueError`` otherwise)."""
    if mode == "real":
        return 1.0
    if mode == "off":
        return 0.0
    factor = float(mode)
    if not factor >= 0:
        raise ValueError(f"rate limit factor must be >= 0, not {mode!r}")
    return factor
