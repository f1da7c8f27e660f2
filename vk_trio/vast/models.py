"""Typed views of the Vast.ai JSON documents vk-trio reads and writes.

Only the fields vk-trio uses are declared; msgspec ignores the rest, so a new field on the real
API never breaks decoding. Units follow the API (``vast-api.md`` §3.3, §5.1): ``gpu_ram`` in MB,
``disk_space`` in GB, prices in $/hour. Oddities of the real API are absorbed here, once:

- ``public_ipaddr`` may carry trailing whitespace: use ``Instance.address``.
- ``ports`` is a Docker-style map whose ``HostPort`` is a string: use ``Instance.endpoints()``.
- ``extra_env`` is a list of ``[key, value]`` pairs in v1 and a dict in some v0 records.
- ``geolocation`` is ``"<region>, <CC>"`` or null: use ``Offer.country``.

Ids are validated on decoding (:data:`Id`): an id that is not a positive 64-bit integer cannot
name anything on Vast, so a document carrying one is malformed, not a record to act on.

No I/O happens in this module.

Every struct here is ``gc=False``: decoded data never refers back to what holds it, so the
cyclic collector need not walk the thousands a node keeps (a full collection's pause grows
with every object it walks).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
"""An offer, instance or contract id as Vast issues them (database keys: positive, 64-bit)."""

_MAX_PORT = 65535


class Offer(msgspec.Struct, gc=False, kw_only=True):
    """One row of ``POST /api/v0/bundles/``: a machine slice that can be bought once."""

    id: Id
    machine_id: int = 0
    host_id: int = 0
    num_gpus: int = 1
    gpu_name: str = ""
    gpu_ram: float = 0.0
    """Per-GPU memory in MB."""
    gpu_total_ram: float = 0.0
    disk_space: float = 0.0
    """Free disk in GB."""
    dph_total: float = 0.0
    """On-demand price in $/hour, storage for the searched ``allocated_storage`` included."""
    dph_base: float = 0.0
    min_bid: float = 0.0
    """Lowest interruptible (bid) price in $/hour."""
    reliability: float = 0.0
    reliability2: float = 0.0
    geolocation: str | None = None
    verification: str | None = None
    cuda_max_good: float = 0.0
    compute_cap: int = 0
    inet_down: float = 0.0
    inet_up: float = 0.0
    direct_port_count: int = 0
    cpu_cores_effective: float = 0.0
    cpu_ram: float = 0.0
    rentable: bool = True
    rented: bool = False
    hosting_type: int | None = None
    score: float = 0.0

    @property
    def country(self) -> str:
        """The ISO country code that ends ``geolocation`` ("Texas, US" → "US"), or ""."""
        if not self.geolocation:
            return ""
        return self.geolocation.rsplit(",", 1)[-1].strip().upper()

    @property
    def verified(self) -> bool:
        return self.verification == "verified"


class PortBinding(msgspec.Struct, gc=False):
    """One entry of an instance's Docker-style ``ports`` map; ``HostPort`` is a string, but
    an integer is accepted too: one odd record must not make a whole instance list unreadable.
    """

    HostPort: str | int
    HostIp: str = "0.0.0.0"


class Instance(msgspec.Struct, gc=False, kw_only=True):
    """An instance (a rented contract) as the list and show endpoints return it."""

    id: Id
    actual_status: str | None = None
    """null/created/loading → booting; running; exited/stopped/offline/unknown → not serving."""
    intended_status: str | None = None
    cur_state: str | None = None
    status_msg: str | None = None
    label: str | None = None
    image_uuid: str | None = None
    image_args: list[str] | None = None
    image_runtype: str | None = None
    extra_env: list[list[str]] | dict[str, str] | None = None
    onstart: str | None = None
    public_ipaddr: str | None = None
    ports: dict[str, list[PortBinding]] | None = None
    machine_id: int = 0
    host_id: int = 0
    num_gpus: int = 0
    gpu_name: str | None = None
    gpu_ram: float = 0.0
    dph_total: float = 0.0
    """$/h while running, storage included (for a bid: the bid plus storage)."""
    storage_total_cost: float = 0.0
    """$/h for its disk: all a stopped instance bills (§5.1, §7)."""
    disk_space: float = 0.0
    geolocation: str | None = None
    is_bid: bool = False
    ssh_host: str | None = None
    ssh_port: int | None = None
    start_date: float | None = None
    # Live usage (None when Vast does not report it): GPU percent, CPU as a fraction of the
    # effective cores, memory, GPU memory and disk in GB ([unverified] units, see §5.1).
    gpu_util: float | None = None
    cpu_util: float | None = None
    cpu_cores_effective: float | None = None
    mem_usage: float | None = None
    vmem_usage: float | None = None
    disk_usage: float | None = None

    @property
    def billing(self) -> float:
        """$/h it bills now, as Vast bills: ``dph_total`` while running, only its storage
        otherwise (booting, stopped or outbid, offline: GPU time is charged only while the
        container runs)."""
        return self.dph_total if self.actual_status == "running" else self.storage_total_cost

    @property
    def address(self) -> str:
        """``public_ipaddr`` with the whitespace the real API sometimes appends removed."""
        return (self.public_ipaddr or "").strip()

    def endpoints(self) -> dict[str, str]:
        """Container port spec → reachable ``ip:port``, e.g. ``{"8000/tcp": "1.2.3.4:41201"}``.

        A binding whose ``HostPort`` is not a port number (``""``, ``"abc"``, ``99999``) is left
        out: nothing can be reached through it, and the status report must not fail over it.
        """
        address = self.address
        if not address or not self.ports:
            return {}
        found: dict[str, str] = {}
        for spec, bindings in sorted(self.ports.items()):
            port = _port(bindings[0].HostPort) if bindings else None
            if port is not None:
                found[spec] = f"{address}:{port}"
        return found

    def env(self) -> dict[str, str]:
        """``extra_env`` as a dict, whichever of its two shapes the API sent."""
        if self.extra_env is None:
            return {}
        if isinstance(self.extra_env, dict):
            return dict(self.extra_env)
        return {pair[0]: pair[1] for pair in self.extra_env if len(pair) == 2}


def _port(value: str | int) -> int | None:
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port <= _MAX_PORT else None


class CreateInstance(msgspec.Struct, gc=False, kw_only=True):
    """Body of ``PUT /api/v0/asks/{offer_id}/`` (``vast-api.md`` §4.1).

    vk-trio always runs the pod's own image with its own entrypoint, so ``runtype`` is
    ``"args"``: ``onstart`` carries the entrypoint override (``command``), ``args`` the
    container args, and ``env`` both the environment and the ``-p`` port mappings.
    """

    image: str
    disk: float
    label: str
    env: dict[str, str] = msgspec.field(default_factory=dict)
    runtype: str = "args"
    onstart: str | None = None
    args: list[str] | None = None
    image_login: str | None = None
    price: float | None = None
    """A bid price makes the instance interruptible; None buys on demand."""
    client_id: str = "me"
    cancel_unavail: bool = True
    """Refuse (410) rather than create a stopped instance when the machine cannot start now."""


class CreatedInstance(msgspec.Struct, gc=False, kw_only=True):
    """What a create returned. ``started`` is False for ``success:false`` + ``new_contract``:
    the instance exists (stopped, billing storage) and must be tracked or destroyed."""

    instance_id: int
    started: bool = True
