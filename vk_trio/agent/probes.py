"""The container's exec probes, with the kubelet's semantics.

Each probe runs its command inside the container's world (its env, directory and user, the
same :class:`Launch`) first after ``initial_delay`` seconds from the process's start, then
every ``period``; a command that exits 0 succeeds, one that outlives ``timeout`` is killed
and fails. ``success_threshold`` consecutive successes or ``failure_threshold`` consecutive
failures change the verdict:

- **startup** gates the others: until it passes, liveness and readiness do not run and
  ``started`` is False; failing, it kills the process as liveness does.
- **liveness** failing kills the process (a restart under the pod's policy).
- **readiness** drives ``ready`` (False until it first passes).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence

import trio

from vk_trio.agent.children import Children
from vk_trio.agent.launch import Launch, LaunchError, find_executable
from vk_trio.agent.process import kill_group, spawn
from vk_trio.agent.protocol import ExecProbe
from vk_trio.agent.tracker import ContainerTracker

__all__ = ["Probes", "exec_probe"]

_OUTPUT_LIMIT = 10 * 1024
"""The kubelet keeps at most 10 KiB of a probe's output."""


async def _read_limited(stream: trio.abc.ReceiveStream | None) -> bytes:
    output = b""
    if stream is None:
        return output
    async with stream:
        while data := await stream.receive_some(65536):
            output = (output + data)[:_OUTPUT_LIMIT]
    return output


async def exec_probe(
    command: Sequence[str], launch: Launch, children: Children, limit: float
) -> tuple[bool, str]:
    """Run a probe's command, killed after ``limit`` seconds; whether it passed, and its
    output (or why it could not run)."""
    try:
        executable = await trio.to_thread.run_sync(
            find_executable, command[0], launch.env["PATH"], launch.cwd
        )
        process = await spawn(command, executable, launch, children, stderr=subprocess.STDOUT)
    except LaunchError as error:
        return False, str(error)
    except OSError as error:
        return False, f'exec: "{command[0]}": {error.strerror}'
    try:
        output = b""
        with trio.move_on_after(limit) as scope:
            output = await _read_limited(process.stdout)
            code = await process.wait()
        if scope.cancelled_caught:
            return False, f"command timed out after {limit:g}s"
        return code == 0, output.decode(errors="replace").strip()
    finally:
        with trio.CancelScope(shield=True):
            kill_group(process.pid, signal.SIGKILL)
            await process.wait()
            children.discard(process.pid)


class Probes:
    """The exec probes of one run; ``fail(message)`` is called to kill the run."""

    def __init__(
        self,
        probes: Sequence[ExecProbe],
        launch: Launch,
        children: Children,
        tracker: ContainerTracker,
        fail: Callable[[str], None],
    ) -> None:
        self._probes = list(probes)
        self._launch = launch
        self._children = children
        self._tracker = tracker
        self._fail = fail
        self._started = trio.Event()
        if not any(probe.kind == "startup" for probe in self._probes):
            self._started.set()

    def initial(self) -> tuple[bool | None, bool | None]:
        """``ready`` and ``started`` as a new run starts (None: no such probe)."""
        kinds = {probe.kind for probe in self._probes}
        return (False if "readiness" in kinds else None), (False if "startup" in kinds else None)

    async def run(self) -> None:
        """Run every probe until the run ends (the caller cancels)."""
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for probe in self._probes:
                nursery.start_soon(self._worker, probe, start)

    async def _worker(self, probe: ExecProbe, start: float) -> None:
        await trio.sleep_until(start + probe.initial_delay)
        if probe.kind != "startup":
            await self._started.wait()
        successes = failures = 0
        while True:
            ok, output = await exec_probe(
                probe.command, self._launch, self._children, probe.timeout
            )
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if self._judge(probe, ok, successes, failures, output):
                return
            await trio.sleep(probe.period)

    def _judge(
        self, probe: ExecProbe, ok: bool, successes: int, failures: int, output: str
    ) -> bool:
        """Apply one result; True when this probe is done for the run."""
        passed = ok and successes >= max(probe.success_threshold, 1)
        failed = not ok and failures >= max(probe.failure_threshold, 1)
        if probe.kind == "readiness":
            if passed or failed:
                self._tracker.probed(ready=passed)
            return False
        if probe.kind == "startup" and passed:
            self._tracker.probed(started=True)
            self._started.set()
            return True
        if failed:
            self._fail(f"{probe.kind.capitalize()} probe failed: {output}".strip())
            return True
        return False
