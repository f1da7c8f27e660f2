"""What the simulator holds (offers, instances, log uploads, counters) and how time moves it.

``SimState`` is the base of every part of ``VastSim``: the state, the seeded RNGs, and the waits
(``wait_until``) that re-check on each change and at each instant a status changes by itself."""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import trio

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.config import (
    LOG_POLLS_BEFORE_READY,
    OCI_FAILURE_TEMPLATE,
    Faults,
    VastSimConfig,
    rate_factor,
)
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.devtools.sim.vast.paging import PagedWalk
from vk_trio.devtools.sim.vast.routes import RateLimiter


@dataclass
class SimInstance:
    """One rented contract; its status is derived from the clock, never stored."""

    id: int
    offer: Row
    body: Row
    label: str | None
    created_at: float
    """trio clock: when the create call succeeded (billing starts here)."""
    start_date: float
    """Wall clock epoch, as the API reports it."""
    dph_total: float
    """What the API shows: GPU plus storage, in USD per hour."""
    storage_per_hour: float
    """USD per hour billed for the disk while the instance exists, running or not."""
    is_bid: bool
    ports: dict[str, list[dict[str, str]]]
    direct_ports: tuple[int, int]
    public_ipaddr: str
    api_key: str
    boot_from: float
    """trio clock: when the current boot began (create, or the last start)."""
    intended_status: str = "running"
    stuck_loading: bool = False
    oci_failure: bool = False
    offline_at: float | None = None
    exit_at: float | None = None
    exit_code: int = 1
    destroyed_at: float | None = None
    outbid_by: float | None = None
    """While outbid: the GPU price $/h that outbid it (the machine's going rate). The
    instance is ``stopped`` though ``intended_status`` stays running, as Vast does; a bid at
    or above it (``bid_price``) or ``resume`` starts it again."""
    gpu_seconds: float = 0.0
    """Seconds of GPU time billed before ``gpu_from`` (``bank``)."""
    gpu_dollars: float = 0.0
    """What those seconds cost, each at the price it ran at (a new bid changes it)."""
    gpu_from: float = -math.inf
    """trio clock: GPU time before this instant is in ``gpu_seconds`` already."""
    container_up: bool | None = None
    """With ``run_containers``: whether the process of the current boot has started (the
    instance stays ``loading`` until it has); None when no process is run."""
    process_started: float | None = None
    """With ``run_containers``: wall clock epoch at which the process of the latest boot
    started (the instance shows ``running`` from then on), for the bench to time what
    happens inside an instance once it runs; None until one has."""
    output: OutputLog | None = None
    """With ``run_containers``: the process's stdout and stderr, across restarts (its log)."""
    oci_command: str | None = None
    """The command that could not be exec'd, for the OCI failure message."""

    def phase(self, now: float, boot: float) -> tuple[str | None, str | None]:
        """``(actual_status, status_msg)`` at trio time ``now``."""
        if self.outbid_by is not None:
            return "stopped", "Instance stopped: outbid"
        if self.intended_status == "stopped":
            return "stopped", "Instance stopped"
        if self.offline_at is not None and now >= self.offline_at:
            return "offline", "Host is offline"
        if self.exit_at is not None and now >= self.exit_at:
            return "exited", f"Container exited with code {self.exit_code}"
        # Absolute marks, computed exactly as next_change computes them: comparing elapsed
        # time instead can differ by one float ulp at a mark, and a waiter woken at that
        # mark would find no later one and sleep forever.
        created, loading, running = (self.boot_from + f * boot for f in (0.2, 0.4, 1.0))
        if now < created:
            return None, None
        if now < loading:
            return "created", "Creating container"
        if self.oci_failure:
            command = self.oci_command or self.body.get("onstart") or "sh"
            return "created", OCI_FAILURE_TEMPLATE.format(command=command)
        if now < running or self.stuck_loading or self.container_up is False:
            return "loading", f"{digest(self.id, 'layer')[:12]}: Pull complete\n"
        image = self.image.replace(":", "_")  # the real message spells tags this way
        return "running", f"success, running {image}/{self.runtype}"

    def next_change(self, now: float, boot: float) -> float:
        """The next trio time at which ``phase`` may answer differently (inf if never)."""
        marks = [self.boot_from + f * boot for f in (0.2, 0.4, 1.0)]
        marks += [t for t in (self.offline_at, self.exit_at) if t is not None]
        return min((t for t in marks if t > now), default=math.inf)

    def outbid(self, now: float, boot: float, going_rate: float) -> None:
        """A rival outbids it: GPU billing stops (storage goes on) until it resumes."""
        self.bank(now, boot)
        self.outbid_by = going_rate

    def resume(self, now: float, boot: float) -> None:
        """Vast starts an outbid instance again: it boots anew, its disk as it was."""
        if self.outbid_by is not None:
            self.bank(now, boot)
            self.outbid_by = None
            self.boot_from = now

    def rebid(self, now: float, boot: float, price: float) -> None:
        """A new bid: GPU time from now on bills at ``price``; what ran before keeps its."""
        self.bank(now, boot)
        self.dph_total = price + self.storage_per_hour

    @property
    def image(self) -> str:
        return str(self.body.get("image") or "")

    @property
    def runtype(self) -> str:
        return str(self.body.get("runtype") or "ssh")

    @property
    def gpu_per_hour(self) -> float:
        return self.dph_total - self.storage_per_hour

    def running_seconds(self, now: float, boot: float) -> float:
        """Seconds billed as GPU time up to ``now``: only while ``running`` (vast-api.md §7:
        "GPU time only while running", loading is not charged)."""
        return self.gpu_seconds + self._segment(now, boot)

    def _segment(self, now: float, boot: float) -> float:
        """GPU seconds since ``gpu_from`` in the current run, if it is running or ran."""
        stopped = self.intended_status != "running" or self.outbid_by is not None
        if stopped or self.stuck_loading or self.oci_failure:
            return 0.0
        start = max(self.boot_from + boot, self.gpu_from)
        ends = (now, self.offline_at, self.exit_at, self.destroyed_at)
        return max(0.0, min(t for t in ends if t is not None) - start)

    def bank(self, now: float, boot: float) -> None:
        """Keep the GPU time so far: call it before any change of state or price (stop,
        start, outbid, resume, a new bid)."""
        segment = self._segment(now, boot)
        self.gpu_seconds += segment
        self.gpu_dollars += self.gpu_per_hour * segment / 3600.0
        self.gpu_from = now

    def storage_seconds(self, now: float) -> float:
        """Seconds billed as storage: from creation until destroyed, stopped or not."""
        end = self.destroyed_at if self.destroyed_at is not None else now
        return max(0.0, end - self.created_at)

    def cost(self, now: float, boot: float) -> float:
        """Dollars billed so far, as Vast bills: GPU by the second while running, storage
        while the instance exists."""
        gpu = self.gpu_dollars + self.gpu_per_hour * self._segment(now, boot) / 3600.0
        return gpu + self.storage_per_hour * self.storage_seconds(now) / 3600.0


def digest(*parts: object) -> str:
    """A stable hex string for made-up container hashes and tokens."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def port_specs(env: Mapping[str, Any]) -> list[str]:
    """Container port specs (``"8000/tcp"``) from ``-p host:container[/proto]`` env keys."""
    specs = ["22/tcp"]
    for key in env:
        match = re.fullmatch(r"-p\s+(?:\d+:)?(\d+)(?:/(tcp|udp))?", key.strip())
        if match:
            spec = f"{match[1]}/{match[2] or 'tcp'}"
            if spec not in specs:
                specs.append(spec)
    return specs


class OutputLog:
    """A process's output, bounded to its last ``limit`` bytes (cut at a line start)."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self._data = bytearray()

    def append(self, chunk: bytes | bytearray) -> None:
        self._data += chunk
        if len(self._data) > self.limit:
            cut = len(self._data) - self.limit
            newline = self._data.find(b"\n", cut - 1)
            del self._data[: newline + 1 if newline >= 0 else cut]

    def lines(self) -> list[str]:
        return self._data.decode(errors="replace").splitlines()


@dataclass
class LogUpload:
    """Logs captured by a ``request_logs`` call, served once the "upload" is done."""

    text: str
    polls: int = 0
    polls_needed: float = LOG_POLLS_BEFORE_READY


def wall_time() -> float:
    """Epoch seconds for the API's date fields (never used for durations)."""
    return time.time()


class SimState:
    """The state of one simulated account and marketplace, shared by the parts of ``VastSim``."""

    def __init__(self, config: VastSimConfig | None = None) -> None:
        self.config = config or VastSimConfig()
        self.faults: Faults = self.config.faults
        """The faults in force; change them with ``set_faults``."""
        self.url: str | None = None
        """The base URL, set once ``serve`` is listening."""
        market_rng = random.Random(self.config.seed)
        self._rng = random.Random(f"{self.config.seed}:runtime")
        self._fault_rng = random.Random(f"{self.config.seed}:faults")
        self._next_offer_id = market.IdSequence(market_rng, 20_000_000)
        self._next_instance_id = market.IdSequence(self._rng, 30_000_000)
        self._limiter = RateLimiter(rate_factor(self.config.rate_limits))
        self._offers: dict[int, Row] = {}
        self._instances: dict[int, SimInstance] = {}
        self._walks: dict[tuple[str, str], PagedWalk] = {}
        """Paged listings under way, by (filters, order): see ``_list``."""
        self._logs: dict[str, LogUpload] = {}
        self._stats: Counter[str] = Counter()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.served_files: dict[str, str] = dict(self.config.serve_files)
        """URL path → file answered to ``GET`` (``serve_files``, ``serve_file``)."""
        self.unhealthy_apps: set[int] = set()
        """Instances whose app answers 500 (the ``app_unhealthy`` fault)."""
        """``serve``'s nursery: the instances' app ports are served in it."""
        if self.config.offers_path:
            rows = [
                market.list_offer(
                    row,
                    int(row.get("id") or self._next_offer_id()),
                    start_date=float(row.get("start_date") or 0.0),
                )
                for row in market.load_rows(self.config.offers_path)
            ]
        else:
            rows = market.seeded_offers(market.packaged_rows(), market_rng, self._next_offer_id)
        self._offers = {row["id"]: row for row in rows}
        self._template = dict(min(rows, key=lambda r: r["id"])) if rows else {}

    def _draw(self, rate: float) -> bool:
        return rate > 0 and self._fault_rng.random() < rate

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _live(self, instance_id: int | None) -> SimInstance | None:
        instance = self._instances.get(instance_id) if instance_id is not None else None
        return instance if instance is not None and instance.destroyed_at is None else None

    def _require(self, instance_id: int) -> SimInstance:
        instance = self._live(instance_id)
        if instance is None:
            raise KeyError(f"no live instance {instance_id}")
        return instance

    def _next_transition(self, *, after: float) -> float:
        """The earliest instant after ``after`` at which some instance's status changes."""
        now = after
        boot = self.config.boot_seconds
        return min(
            (i.next_change(now, boot) for i in self._instances.values() if i.destroyed_at is None),
            default=math.inf,
        )

    async def wait_until(self, predicate: Callable[[Self], bool]) -> None:
        """Return once ``predicate(sim)`` holds (wrap it in ``trio.fail_after`` to bound it).

        Re-checks on every state change and at every instant an instance's status changes on
        its own (boot steps, scheduled faults), so nothing polls.
        """
        while True:
            # Transitions are looked for after the moment of the check, not after "now": a
            # status change between the two would otherwise be skipped and never waited for.
            checked_at = trio.current_time()
            if predicate(self):
                return
            changed = self._changed
            with trio.move_on_at(self._next_transition(after=checked_at)):
                await changed.wait()
