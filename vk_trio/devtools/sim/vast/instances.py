"""The instance routes: create (buy an offer), list (paged), show, modify, destroy, and how an
instance is rendered as the API shows it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio
from loguru import logger

from vk_trio.devtools.sim.vast import market
from vk_trio.devtools.sim.vast.apps import AppPorts
from vk_trio.devtools.sim.vast.billing import MISSING_BILLING
from vk_trio.devtools.sim.vast.config import WALK_SECONDS, WALKS_KEPT
from vk_trio.devtools.sim.vast.containers import InstanceContainers
from vk_trio.devtools.sim.vast.faults import FaultControl
from vk_trio.devtools.sim.vast.market import Row
from vk_trio.devtools.sim.vast.offers import OfferRoutes
from vk_trio.devtools.sim.vast.paging import (
    PagedWalk,
    keyset_page,
    parse_order_by,
    parse_page_limit,
    select_columns,
)
from vk_trio.devtools.sim.vast.routes import (
    error_response,
    json_object_body,
    json_query_param,
    no_such_instance,
    path_id,
)
from vk_trio.devtools.sim.vast.state import SimInstance, digest, port_specs, wall_time
from vk_trio.http_server import Request, Response


class InstanceRoutes(OfferRoutes, FaultControl, InstanceContainers):
    """``PUT /api/v0/asks/{id}/``, ``GET /api/v1/instances/`` and ``/api/v0/instances/{id}/``."""

    async def _create(self, request: Request, params: dict[str, str]) -> Response:
        offer_id = path_id(params)
        body = json_object_body(request)
        if offer_id is None or body is None:
            return error_response(
                400,
                "invalid_args",
                "Invalid args: 'id' is required and must be a valid offer ID",
                ask_id=params["id"],
            )
        problem = _create_problem(body, self._offers.get(offer_id))
        if problem:
            return error_response(400, problem[0], problem[1], ask_id=offer_id)
        if self.out_of_credit():
            return error_response(400, *MISSING_BILLING)
        offer = self._take_offer(offer_id)
        if offer is None:
            return error_response(
                404,
                "no_such_ask",
                f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available.",
                ask_id=offer_id,
            )
        instance = self._new_instance(offer, body)
        if self._draw(self.faults.lose_create_response):
            logger.info("vast sim: losing the create response", instance_id=instance.id)
            return Response.text("502 Bad Gateway", 502)
        return Response.json(
            {"success": True, "new_contract": instance.id, "instance_api_key": instance.api_key}
        )

    def _new_instance(self, offer: Row, body: Row) -> SimInstance:
        now = trio.current_time()
        price = body.get("price")
        gpu = float(price) if price is not None else float(offer["dph_base"])
        disk = float(body.get("disk") or 10.0)
        storage = float(offer["storage_cost"]) * disk / market.HOURS_PER_MONTH
        specs = port_specs(body.get("env") or {})
        first = self._rng.randrange(20_000, 60_000)
        ports = {
            spec: [{"HostIp": "0.0.0.0", "HostPort": str(first + i)}]
            for i, spec in enumerate(specs)
        }
        public_ipaddr = str(offer["public_ipaddr"]) + self._rng.choice(("", "", " ", "\n"))
        real_ports = self.config.serve_ports or self.config.run_containers
        app = AppPorts(specs) if real_ports else None
        if app is not None:
            public_ipaddr = "127.0.0.1" + public_ipaddr[len(str(offer["public_ipaddr"])) :]
            ports.update(app.bindings())
        instance = SimInstance(
            id=self._next_instance_id(),
            offer=offer,
            body=body,
            label=body.get("label"),
            created_at=now,
            start_date=wall_time(),
            dph_total=gpu + storage,
            storage_per_hour=storage,
            is_bid=price is not None,
            ports=ports,
            direct_ports=(first, first + len(specs) - 1),
            public_ipaddr=public_ipaddr,
            api_key=f"{self._rng.getrandbits(256):064x}",
            boot_from=now,
            intended_status=str(body.get("target_state") or "running"),
        )
        self._decide_fate(instance)
        self._instances[instance.id] = instance
        self._bill_from(instance)
        if app is not None and self.runs_containers:
            self._start_container(instance, app)
        elif app is not None:
            self._serve_app(instance, app)
        logger.info(
            "vast sim: instance created",
            instance_id=instance.id,
            offer_id=offer["id"],
            label=instance.label,
            gpu=offer.get("gpu_name"),
        )
        self._notify()
        return instance

    async def _list(self, request: Request, params: dict[str, str]) -> Response:
        try:
            filters = json_query_param(request, "select_filters", {})
            order = parse_order_by(json_query_param(request, "order_by", []))
            limit = parse_page_limit(request.param("limit"))
            select = json_query_param(request, "select_cols", ["*"])
        except ValueError as exc:
            return error_response(400, "invalid_args", str(exc))
        if not isinstance(filters, dict):
            return error_response(400, "invalid_args", "select_filters must be an object")
        # Filter and sort on a few cheap columns and render only the rows of the page (and
        # those a filter or order on another column needs): rendering every instance for
        # every page made a sweep of N instances cost N²/25 renders, and the simulator, not
        # the node, was what a thousand pods waited for. The pages after the first follow
        # the rows the first one found (a walk, for ``WALK_SECONDS``), rendered as they are
        # now; filtering all N again for each page made a sweep of 5,000 cost a million.
        now = trio.current_time()
        walk_key = (request.param("select_filters") or "", request.param("order_by") or "")
        walk = self._walks.get(walk_key) if request.param("after_token") else None
        rendered: dict[int, Row] = {}

        def full(row: Row) -> Row:
            instance_id = int(row["id"])
            if instance_id not in rendered:
                rendered[instance_id] = self._render(self._instances[instance_id])
            return rendered[instance_id]

        def column(row: Row, field: str) -> tuple[bool, Any]:
            if field in row:
                return True, row[field]
            return market.stored_column(full(row), field)

        if walk is None or now - walk.at > WALK_SECONDS:
            rows = [
                row
                for row in (self._skeleton(i, now) for i in self._instances.values())
                if row and market.matches(row, filters, column)
            ]
            rows = market.sort_rows(rows, order, column)
            labels = dict(Counter(row.get("label") or "" for row in rows))
            walk = self._walks[walk_key] = PagedWalk(now, rows, labels)
            while len(self._walks) > WALKS_KEPT:
                del self._walks[next(iter(self._walks))]
        try:
            page, next_token = keyset_page(
                walk.rows, order, request.param("after_token"), limit, column
            )
        except ValueError:
            return error_response(400, "invalid_token", "Invalid after_token")
        page = [row for row in page if self._instances[int(row["id"])].destroyed_at is None]
        return Response.json(
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": len(walk.rows),
                "label_counts": walk.labels,
                "next_token": next_token,
                "instances": [select_columns(full(row), select) for row in page],
            }
        )

    def _skeleton(self, instance: SimInstance, now: float) -> Row:
        """The columns lists filter and sort on most, cheaply; {} for a destroyed one."""
        if instance.destroyed_at is not None:
            return {}
        return {
            "id": instance.id,
            "label": instance.label,
            "actual_status": instance.phase(now, self.config.boot_seconds)[0],
            "intended_status": instance.intended_status,
            "gpu_name": instance.offer.get("gpu_name"),
        }

    async def _legacy_list(self, request: Request, params: dict[str, str]) -> Response:
        return error_response(
            410,
            "deprecated",
            "Endpoint deprecated: /api/v0/instances/ is deprecated. "
            "Use /api/v1/instances/ instead.",
        )

    async def _show(self, request: Request, params: dict[str, str]) -> Response:
        instance_id = path_id(params)
        if instance_id is None:
            return error_response(400, "invalid_args", "invalid instance_id")
        instance = self._live(instance_id)
        return Response.json({"instances": self._render(instance) if instance else None})

    async def _modify(self, request: Request, params: dict[str, str]) -> Response:
        instance = self._live(path_id(params))
        body = json_object_body(request)
        if instance is None:
            return no_such_instance(path_id(params) or 0)
        if not body or not ({"label", "state"} & body.keys()):
            return error_response(400, "invalid_args", "label or state is required")
        if "state" in body and body["state"] not in ("running", "stopped"):
            return Response.json({"success": False, "msg": "Invalid target state"}, 400)
        if len(str(body.get("label") or "")) > 1024:
            return error_response(400, "invalid_args", "label_too_long")
        if body.get("state") == "running" and self.out_of_credit():
            return error_response(400, *MISSING_BILLING)
        if "state" in body:
            self._set_state(instance, str(body["state"]))
        if "label" in body:
            instance.label = body["label"]
        self._notify()
        return Response.json({"success": True})

    def _set_state(self, instance: SimInstance, state: str) -> None:
        """Stop, or start again: a start boots anew, clearing an exit (a host stays offline)."""
        instance.bank(trio.current_time(), self.config.boot_seconds)
        if state == "running" and instance.intended_status != "running":
            instance.boot_from = trio.current_time()
        if state == "running":
            instance.exit_at = None
        instance.intended_status = state

    async def _change_bid(self, request: Request, params: dict[str, str]) -> Response:
        """``vastai change bid``: a new bid for an interruptible instance; ``price`` null
        bids the winning price. A bid at or above the machine's going rate resumes an
        outbid instance (one below it keeps waiting); never below the offer's ``min_bid``."""
        instance = self._live(path_id(params))
        body = json_object_body(request)
        if instance is None:
            return no_such_instance(path_id(params) or 0)
        if body is None:
            return error_response(400, "invalid_args", "a JSON body is required")
        if not instance.is_bid:
            return error_response(400, "invalid_args", "not an interruptible (bid) instance")
        floor = float(instance.offer["min_bid"])
        price = body.get("price")
        if price is None:
            price = max(instance.outbid_by or 0.0, floor, instance.gpu_per_hour)
        if not isinstance(price, int | float) or isinstance(price, bool) or price <= 0:
            return error_response(400, "invalid_price", f"Invalid bid price {price!r}")
        if price < floor:
            return error_response(
                400, "invalid_price", f"Bid price {price} is below the minimum bid {floor}"
            )
        now, boot = trio.current_time(), self.config.boot_seconds
        instance.rebid(now, boot, float(price))
        if instance.outbid_by is not None and price >= instance.outbid_by - 1e-9:
            instance.resume(now, boot)
        self._notify()
        return Response.json({"success": True})

    async def _destroy(self, request: Request, params: dict[str, str]) -> Response:
        instance_id = path_id(params)
        instance = self._live(instance_id)
        if instance is None:
            return no_such_instance(instance_id or 0)
        self._destroy_instance(instance)
        return Response.json({"success": True})

    def _destroy_instance(self, instance: SimInstance) -> None:
        """Stop billing and put the machine back on the market under a fresh offer id."""
        instance.destroyed_at = trio.current_time()
        self._bill_until(instance)
        relisted = market.list_offer(
            instance.offer,
            self._next_offer_id(),
            start_date=instance.offer.get("start_date") or 0.0,
        )
        self._offers[relisted["id"]] = relisted
        logger.info(
            "vast sim: instance destroyed",
            instance_id=instance.id,
            cost=round(instance.cost(instance.destroyed_at, self.config.boot_seconds), 6),
        )
        self._notify()

    def _render(self, instance: SimInstance) -> Row:
        """The instance as the API shows it (``vast-api.md`` §5.1, §8.2)."""
        now = trio.current_time()
        status, message = instance.phase(now, self.config.boot_seconds)
        offer, body = instance.offer, instance.body
        row = {k: offer.get(k) for k in _COPIED_FROM_OFFER}
        disk_hour = instance.storage_per_hour
        row.update(
            id=instance.id,
            actual_status=status,
            intended_status=instance.intended_status,
            cur_state="stopped" if status == "stopped" else "running",
            next_state=instance.intended_status,
            status_msg=message,
            label=instance.label,
            image_uuid=instance.image,
            image_args=list(body.get("args") or []),
            image_runtype=instance.runtype,
            extra_env=[[str(k), str(v)] for k, v in (body.get("env") or {}).items()],
            onstart=body.get("onstart"),
            template_id=None,
            template_hash_id=body.get("template_hash_id"),
            template_name=None,
            public_ipaddr=instance.public_ipaddr,
            local_ipaddrs="192.168.1.20 172.17.0.1 \n",
            ports=instance.ports if status == "running" else None,
            direct_port_start=instance.direct_ports[0],
            direct_port_end=instance.direct_ports[1],
            ssh_host=f"ssh{instance.id % 9 + 1}.vast.ai",
            ssh_port=10_000 + instance.id % 50_000,
            ssh_idx=str(instance.id % 9 + 1),
            machine_dir_ssh_port=instance.direct_ports[0] - 1,
            jupyter_token=digest(instance.api_key, "jupyter"),
            dph_total=instance.dph_total,
            min_bid=offer.get("min_bid") if instance.outbid_by is None else instance.outbid_by,
            storage_total_cost=disk_hour,
            is_bid=instance.is_bid,
            disk_space=float(body.get("disk") or 10.0),
            gpu_totalram=offer.get("gpu_total_ram"),
            **self._usage(instance, running=status == "running"),
            start_date=instance.start_date,
            end_date=instance.start_date + float(offer.get("duration") or 0.0),
            duration=max(0.0, now - instance.created_at),
            uptime_mins=round(max(0.0, now - instance.boot_from) / 60.0, 2),
            time_remaining="",
            time_remaining_isbid="",
            volume_info=[],
        )
        return row

    @staticmethod
    def _usage(instance: SimInstance, *, running: bool) -> Row:
        """Live metrics of a running instance, steady per instance (from its id): what
        ``kubectl top`` shows through the kubelet API. Units as the API's: utilisations are
        fractions (GPU: percent), memory and disk in GB."""
        if not running:
            return dict.fromkeys(
                ("gpu_util", "cpu_util", "mem_usage", "mem_limit", "vmem_usage", "disk_usage")
            )
        spread = int(digest(instance.id, "usage")[:4], 16) / 0xFFFF
        gpu_ram_gb = float(instance.offer.get("gpu_ram") or 0.0) / 1024.0
        return {
            "gpu_util": round(40.0 + 55.0 * spread, 1),
            "cpu_util": round(0.1 + 0.5 * spread, 3),
            "mem_usage": round(2.0 + 6.0 * spread, 2),
            "mem_limit": float(instance.offer.get("cpu_ram") or 0.0) / 1024.0 or None,
            "vmem_usage": round(gpu_ram_gb * (0.5 + 0.4 * spread), 2),
            "disk_usage": round(1.0 + 4.0 * spread, 2),
        }


_COPIED_FROM_OFFER = tuple(
    """machine_id host_id bundle_id num_gpus gpu_name gpu_ram gpu_frac gpu_arch gpu_lanes
    gpu_mem_bw compute_cap cuda_max_good driver_version cpu_name cpu_arch cpu_cores
    cpu_cores_effective cpu_ram disk_name disk_bw inet_up inet_down inet_up_cost inet_down_cost
    dph_base storage_cost geolocation reliability2 verification rentable static_ip
    external hosting_type mobo_name os_version pci_gen pcie_bw dlperf total_flops bw_nvlink
    has_avx direct_port_count""".split()  # noqa: SIM905 (a word list reads better)
)
"""Instance columns that describe the machine, taken from the offer bought."""


def _create_problem(body: Row, offer: Row | None) -> tuple[str, str] | None:
    """``(error, msg)`` for a create body the API refuses with 400, else None."""
    if not body.get("image") and not body.get("template_hash_id"):
        return "invalid_args", "Invalid args: image is required"
    if not isinstance(body.get("env") or {}, dict):
        return "invalid_args", "env must be a JSON object, not a Docker flag string"
    price = body.get("price")
    if price is not None:
        if not isinstance(price, int | float) or price <= 0:
            return "invalid_price", f"Invalid bid price {price!r}"
        if offer is not None and price < float(offer["min_bid"]):
            return "invalid_price", f"Bid price {price} is below the minimum bid {offer['min_bid']}"
    return None
