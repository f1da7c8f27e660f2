"""Injected faults: drawn per instance at birth (seeded), set by tests or ``/_sim/faults``."""

from __future__ import annotations

from typing import Any

import msgspec
import trio
from loguru import logger

from vk_trio.devtools.sim.vast.billing import Billing
from vk_trio.devtools.sim.vast.config import Faults
from vk_trio.devtools.sim.vast.routes import error_response, json_object_body
from vk_trio.devtools.sim.vast.state import SimInstance
from vk_trio.http_server import Request, Response


class FaultControl(Billing):
    """The faults in force, each instance's fate, and the calls that break one instance now."""

    def _decide_fate(self, instance: SimInstance) -> None:
        """Draw the instance-level faults once, at birth, so its story is reproducible."""
        instance.stuck_loading = self._draw(self.faults.stuck_loading)
        instance.oci_failure = self._draw(self.faults.oci_failure)
        boot = self.config.boot_seconds
        trouble_at = instance.created_at + boot + boot * self._fault_rng.uniform(1.0, 3.0)
        if self._draw(self.faults.host_offline):
            instance.offline_at = trouble_at
        if self._draw(self.faults.instance_exit):
            instance.exit_at = trouble_at

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault rates (others keep their value); returns the faults now in force.

        ``app_unhealthy=<instance id>`` makes that instance's app answer 500 from now on
        (``serve_ports``); it is per instance, so it is kept in ``unhealthy_apps``.
        ``outbid=<instance id>`` and ``resume=<instance id>`` outbid an interruptible
        instance and resume it (``outbid``, ``resume``).
        ``credit=<dollars>`` sets the account's credit (``Billing.set_credit``).

        Instance-level rates apply to instances created from now on.
        """
        credit = changes.pop("credit", None)
        if credit is not None:
            self.set_credit(float(credit))
        unhealthy = changes.pop("app_unhealthy", None)
        if unhealthy is not None:
            self.unhealthy_apps.add(int(unhealthy))
        outbid, resume = changes.pop("outbid", None), changes.pop("resume", None)
        if outbid is not None:
            self.outbid(int(outbid))
        if resume is not None:
            self.resume(int(resume))
        merged = {**msgspec.structs.asdict(self.faults), **changes}
        self.faults = msgspec.convert(merged, Faults)
        logger.info("vast sim: faults set", **msgspec.structs.asdict(self.faults))
        return self.faults

    def exit_instance(self, instance_id: int, *, code: int = 0) -> None:
        """Make the container exit now with ``code`` (``actual_status`` becomes ``exited``)."""
        instance = self._require(instance_id)
        instance.exit_at = trio.current_time()
        instance.exit_code = code
        self._notify()

    def set_offline(self, instance_id: int) -> None:
        """Take the instance's host offline now (``actual_status`` becomes ``offline``)."""
        self._require(instance_id).offline_at = trio.current_time()
        self._notify()

    def outbid(self, instance_id: int, *, price: float | None = None) -> None:
        """A rival outbids the interruptible instance now: it goes ``stopped`` (intended
        still running), keeps its disk and bills storage. The machine's going rate becomes
        ``price`` (default: its bid plus 20%); a bid at or above it resumes the instance."""
        instance = self._require(instance_id)
        if not instance.is_bid:
            raise ValueError(f"instance {instance_id} is on demand: it cannot be outbid")
        going_rate = price if price is not None else round(instance.gpu_per_hour * 1.2, 4)
        instance.outbid(trio.current_time(), self.config.boot_seconds, going_rate)
        self._notify()

    def resume(self, instance_id: int) -> None:
        """The market falls back: Vast starts the outbid instance again (it boots anew)."""
        self._require(instance_id).resume(trio.current_time(), self.config.boot_seconds)
        self._notify()

    def set_stuck_loading(self, instance_id: int) -> None:
        """Keep the instance in ``loading`` forever."""
        self._require(instance_id).stuck_loading = True
        self._notify()

    def set_oci_failure(self, instance_id: int) -> None:
        """Fail the instance's container creation (``created`` + "OCI runtime create failed")."""
        self._require(instance_id).oci_failure = True
        self._notify()

    async def _get_faults(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.faults)

    async def _post_faults(self, request: Request, params: dict[str, str]) -> Response:
        body = json_object_body(request)
        try:
            self.set_faults(**(body or {}))
        except (TypeError, ValueError, KeyError, msgspec.ValidationError) as exc:
            return error_response(400, "invalid_args", str(exc))
        return Response.json(self.faults)
