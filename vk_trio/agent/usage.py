"""What the pod uses now, for the kubelet's Summary API: its cgroup, its disk, its GPUs.

The agent is the container's first process, so the container's own cgroup (what
``/sys/fs/cgroup`` shows inside a Docker container with a cgroup namespace) is the pod's.
cgroup v2 first (``cpu.stat``'s ``usage_usec``, ``memory.current``), then v1's files
(``cpuacct.usage``, ``memory.usage_in_bytes``). The GPUs come from ``nvidia-smi`` when the
image has it (Vast's NVIDIA runtime mounts it in); anything unreadable is None, so that the
node reports what it knows and omits the rest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import trio
from loguru import logger

from vk_trio.agent.protocol import UsageReport

__all__ = ["NVIDIA_SMI_TIMEOUT", "Gpus", "parse_nvidia_smi", "read_usage"]

NVIDIA_SMI_TIMEOUT = 2.0
"""nvidia-smi can hang on a wedged driver; a usage poll must not."""
NVIDIA_SMI_QUERY = [
    "--query-gpu=name,utilization.gpu,memory.total,memory.used",
    "--format=csv,noheader,nounits",
]
MIB = 1024 * 1024

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    """Log a failure once per process: usage is polled every few seconds, and a GPU whose
    readings cannot be parsed will not start being parseable."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_nanoseconds(cgroup: Path) -> int | None:
    """Cumulative CPU time: v2 ``cpu.stat`` (microseconds), else v1 ``cpuacct.usage``."""
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
    except (OSError, ValueError):
        pass
    for directory in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
        found = _read_int(cgroup / directory / "cpuacct.usage")
        if found is not None:
            return found
    return None


def _memory_bytes(cgroup: Path) -> int | None:
    found = _read_int(cgroup / "memory.current")
    if found is None:
        found = _read_int(cgroup / "memory" / "memory.usage_in_bytes")
    return found


def _disk(disk: Path) -> tuple[int | None, int | None]:
    """``(used, capacity)`` of the filesystem at ``disk``: used is total minus free (root's
    reserve counts as used, as ``df`` and the kubelet count it)."""
    try:
        found = os.statvfs(disk)
    except OSError:
        return None, None
    total = found.f_blocks * found.f_frsize
    return total - found.f_bfree * found.f_frsize, total


def _read_host(cgroup: Path, disk: Path) -> tuple[int | None, int | None, int | None, int | None]:
    used, capacity = _disk(disk)
    return _cpu_nanoseconds(cgroup), _memory_bytes(cgroup), used, capacity


class Gpus(NamedTuple):
    """The GPU fields of a UsageReport."""

    gpu_name: str
    gpu_utilisation: float
    gpu_memory_bytes: int
    gpu_memory_used_bytes: int


def parse_nvidia_smi(text: str) -> Gpus:
    """The UsageReport's GPU fields from nvidia-smi's CSV, one line per GPU: memory summed,
    utilisation averaged (percent, 0-100), the first GPU's name. Raises ValueError."""
    rows = [[field.strip() for field in line.split(",")] for line in text.splitlines()]
    rows = [row for row in rows if any(row)]
    if not rows or any(len(row) != 4 for row in rows):
        raise ValueError(f"unexpected nvidia-smi output {text[:200]!r}")
    utilisation = [float(row[1]) for row in rows]
    return Gpus(
        gpu_name=rows[0][0],
        gpu_utilisation=sum(utilisation) / len(utilisation),
        gpu_memory_bytes=sum(int(float(row[2])) for row in rows) * MIB,
        gpu_memory_used_bytes=sum(int(float(row[3])) for row in rows) * MIB,
    )


async def _gpus() -> Gpus | None:
    """nvidia-smi's answer, or nothing (no nvidia-smi, a timeout, a failure)."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    with trio.move_on_after(NVIDIA_SMI_TIMEOUT):
        try:
            done = await trio.run_process(
                [program, *NVIDIA_SMI_QUERY], capture_stdout=True, capture_stderr=True, check=False
            )
        except OSError as err:
            _warn_once("run", "usage: cannot run nvidia-smi: {}", err)
            return None
        if done.returncode != 0:
            _warn_once("exit", "usage: nvidia-smi exited {}", done.returncode)
            return None
        try:
            return parse_nvidia_smi(done.stdout.decode(errors="replace"))
        except ValueError as err:
            _warn_once("parse", "usage: cannot parse nvidia-smi: {}", err)
            return None
    _warn_once("timeout", "usage: nvidia-smi took over {} s", NVIDIA_SMI_TIMEOUT)
    return None


async def read_usage(cgroup: Path = Path("/sys/fs/cgroup"), disk: Path = Path("/")) -> UsageReport:
    """One reading: the cgroup's CPU time and memory, the disk, the GPUs."""
    cpu, memory, used, capacity = await trio.to_thread.run_sync(_read_host, cgroup, disk)
    gpus = await _gpus()
    return UsageReport(
        cpu_usage_nano_seconds=cpu,
        memory_bytes=memory,
        disk_used_bytes=used,
        disk_capacity_bytes=capacity,
        **(gpus._asdict() if gpus else {}),
    )
