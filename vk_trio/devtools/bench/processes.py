"""The bench's children (simulators and nodes) as processes: start, stop, CPU and memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

STARTUP_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ChildFailed(Exception):
    """A child process exited on its own or never became ready; the message names its log."""


Popen = subprocess.Popen[bytes]


async def start_sim(folder: Path, kind: str, *args: str) -> tuple[Popen, str]:
    """``vk-trio sim KIND ARGS`` in its own process, and the URL it prints first."""
    out, log = folder / f"sim-{kind}.out", folder / f"sim-{kind}.log"
    command = [sys.executable, "-m", "vk_trio", "sim", kind, "--listen", "127.0.0.1:0", *args]
    process = spawn(command, out=out, log=log)
    with trio.move_on_after(STARTUP_SECONDS):
        while process.poll() is None:
            first = (await trio.Path(out).read_text()).partition("\n")
            if first[1]:
                return process, first[0].strip()
            await trio.sleep(0.05)
    process.kill()
    raise ChildFailed(f"the {kind} simulator did not start; see {log}")


NODE_CPU = 0
"""With ``--pin-node``, the node's CPU; everything else runs on the others."""


def others_than_node() -> set[int]:
    """The CPUs left to the simulators, agents, kubectl and the bench with ``--pin-node``."""
    return set(range(os.cpu_count() or 1)) - {NODE_CPU}


def pin_to_node_cpu(pid: int) -> None:
    """Move a node just started (its one thread: Python has not started any other yet, and
    those it starts inherit this) onto ``NODE_CPU``."""
    os.sched_setaffinity(pid, {NODE_CPU})


def spawn(
    command: list[str], *, out: Path | None, log: Path, env: dict[str, str] | None = None
) -> Popen:
    """Start a child writing to files (a pipe nobody reads could fill up and stall it)."""
    with log.open("wb") as log_file:
        if out is None:
            return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        with out.open("wb") as out_file:
            return subprocess.Popen(command, stdout=out_file, stderr=log_file, env=env)


def stop_process(process: Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s: a child gets time to shut down cleanly, but not forever."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a child that must be told its port up front."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int, *, waited_children: bool = False) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``, fields 14 and 15), and
    with ``waited_children`` those of the children it reaped (16 and 17: what a shell ran
    before it exec'd the process, say)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def proportional_kb(pid: int) -> int:
    """A process's PSS in KiB (``/proc/<pid>/smaps_rollup``): its RSS with each shared page
    divided among the processes that map it, so that a sum over many is what they take."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Pss":
            return int(value.split()[0])
    return 0


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid`` → its parent, read from ``/proc/*/stat`` (one scan:
    ``/proc/<pid>/task/*/children`` would miss children forked from another thread)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:  # gone meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child in children.get(parent, []):
            found[child] = parent
            frontier.append(child)
    return found


def command_line(pid: int) -> list[str]:
    """A process's argv (empty when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
