"""What a pod's instance uses, as Vast reports it in the instance list (``kubectl top``).

The one poller's sweep already carries each instance's CPU, memory, disk and GPU figures, so
usage costs no extra call. Vast's units are converted here: utilisation as a fraction of the
effective cores, memory and disk in GB, GPU RAM in MiB per GPU.
"""

from __future__ import annotations

import datetime as _dt

from vk_trio.node.provider import Usage
from vk_trio.vast import Instance

__all__ = ["instance_usage"]


def instance_usage(instance: Instance) -> Usage:
    return Usage(
        start_time=(
            _dt.datetime.fromtimestamp(instance.start_date, _dt.UTC)
            if instance.start_date
            else None
        ),
        cpu_nano_cores=_scaled(instance.cpu_util, 1e9 * (instance.cpu_cores_effective or 1.0)),
        memory_bytes=_scaled(instance.mem_usage, 1e9),
        disk_used_bytes=_scaled(instance.disk_usage, 1e9),
        disk_capacity_bytes=_scaled(instance.disk_space, 1e9),
        gpu_utilisation=instance.gpu_util,
        gpu_name=instance.gpu_name,
        gpu_memory_bytes=int(instance.gpu_ram * 2**20 * max(1, instance.num_gpus)),
        gpu_memory_used_bytes=_scaled(instance.vmem_usage, 1e9),
    )


def _scaled(value: float | None, factor: float) -> int | None:
    return None if value is None else int(value * factor)
