"""Usage from fake cgroup trees and a fake nvidia-smi on PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from vk_trio.agent import usage
from vk_trio.agent.usage import Gpus, parse_nvidia_smi, read_usage

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with nothing but what a test puts there, and the log-once memory cleared."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(usage, "_warned", set())
    return bin_dir


def fake_smi(bin_dir: Path, body: str) -> None:
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def cgroup_v2(tmp_path: Path) -> Path:
    root = tmp_path / "cg2"
    root.mkdir()
    (root / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (root / "memory.current").write_text("123456789\n")
    return root


def cgroup_v1(tmp_path: Path) -> Path:
    root = tmp_path / "cg1"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu,cpuacct" / "cpuacct.usage").write_text("987654321\n")
    (root / "memory").mkdir()
    (root / "memory" / "memory.usage_in_bytes").write_text("4096\n")
    return root


async def test_cgroup_v2_and_disk(tmp_path: Path) -> None:
    report = await read_usage(cgroup_v2(tmp_path), tmp_path)
    assert report.cpu_usage_nano_seconds == 1_500_000
    assert report.memory_bytes == 123456789
    found = os.statvfs(tmp_path)
    assert report.disk_capacity_bytes == found.f_blocks * found.f_frsize
    assert report.disk_used_bytes is not None
    assert 0 < report.disk_used_bytes <= report.disk_capacity_bytes
    assert report.gpu_name is None and report.gpu_utilisation is None


async def test_cgroup_v1_fallbacks(tmp_path: Path) -> None:
    report = await read_usage(cgroup_v1(tmp_path), tmp_path)
    assert report.cpu_usage_nano_seconds == 987654321
    assert report.memory_bytes == 4096


async def test_nothing_readable(tmp_path: Path) -> None:
    report = await read_usage(tmp_path / "missing", tmp_path / "missing")
    assert report.cpu_usage_nano_seconds is None
    assert report.memory_bytes is None
    assert report.disk_used_bytes is None and report.disk_capacity_bytes is None


async def test_gpus_from_nvidia_smi(tmp_path: Path, no_gpus: Path) -> None:
    fake_smi(
        no_gpus,
        'case "$*" in *--query-gpu=name,utilization.gpu,memory.total,memory.used*) ;;'
        " *) exit 9;; esac\n"
        "echo 'NVIDIA GeForce RTX 4090, 30, 24564, 1000'\n"
        "echo 'NVIDIA GeForce RTX 4090, 50, 24564, 2000'",
    )
    report = await read_usage(cgroup_v2(tmp_path), tmp_path)
    assert report.gpu_name == "NVIDIA GeForce RTX 4090"
    assert report.gpu_utilisation == 40.0
    assert report.gpu_memory_bytes == 2 * 24564 * MIB
    assert report.gpu_memory_used_bytes == 3000 * MIB


SLEEP = shutil.which("sleep")


@pytest.mark.parametrize(
    ("body", "warning"),
    [
        ("echo 'GPU, [N/A], 10, 1'", "parse"),
        ("echo 'garbage'", "parse"),
        ("exit 3", "exit"),
        (f"exec {SLEEP} 10", "timeout"),
    ],
    ids=["not-available", "garbage", "fails", "hangs"],
)
async def test_nvidia_smi_trouble_gives_none(
    tmp_path: Path, no_gpus: Path, body: str, warning: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage, "NVIDIA_SMI_TIMEOUT", 0.2)
    fake_smi(no_gpus, body)
    cgroup = cgroup_v2(tmp_path)
    for _ in range(2):  # the second reading logs nothing new
        with trio.fail_after(2):
            report = await read_usage(cgroup, tmp_path)
        assert report.gpu_name is None and report.gpu_memory_bytes is None
        assert report.memory_bytes == 123456789
    assert usage._warned == {warning}


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi("A100, 7, 81920, 512\n\n") == Gpus("A100", 7.0, 81920 * MIB, 512 * MIB)
    with pytest.raises(ValueError):
        parse_nvidia_smi("")
