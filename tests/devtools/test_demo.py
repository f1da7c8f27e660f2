"""``vk-trio demo`` as a user runs it: a real process, its real output, a real Ctrl-C (SIGINT).

* A whole run exits 0, runs every pod (the Deployment's included, through the stand-in's
  controllers), leaks nothing, and prints what the README's sample shows: the README's block
  must match the output once numbers and random names are masked, so it cannot go stale.
  ``VK_TRIO_UPDATE_README=1 .venv/bin/pytest tests/devtools/test_demo.py -k whole`` rewrites the
  block from the run instead (then review the diff).
* Where the simulator's sandbox works (util-linux ``unshare``, user namespaces: the README's
  sample), the instances run their processes and the agent's example pod prints its ConfigMap;
  without it (no ``unshare`` on ``PATH`` here) the demo says so in one line, skips that pod and
  runs the rest as before.
* Ctrl-C while holding is the normal way to stop: exit 0, no traceback, no instance left, no
  temporary folder left. Ctrl-C in the middle of a run: exit 130 (it did not check that every
  pod ran), the same cleanliness.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from vk_trio.devtools.sim.vast.sandbox import probe

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SAMPLE_START = (
    "<!-- demo-output: checked (and rewritten on request) by tests/devtools/test_demo.py -->"
)


def mask(text: str) -> list[str]:
    """Lines with what varies between runs masked: numbers (times, prices, ports, call counts,
    addresses), the pods' pod-template-hash and random suffix, and runs of spaces (columns
    shift with them)."""
    text = re.sub(
        r"-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}\b",
        "-HASH-xxxxx",
        text,
    )
    text = re.sub(r"\d+", "N", text)
    return [re.sub(r"\s+", " ", line).strip() for line in text.strip().splitlines()]


def readme_sample(replace_with: str | None = None) -> str:
    """The README's sample block; with ``replace_with``, rewrite it first."""
    text = README.read_text()
    start = text.index(SAMPLE_START)
    before, block, after = text[start:].split("```", 2)
    if replace_with is not None:
        block = "text\n" + replace_with.strip("\n") + "\n"
        README.write_text(text[:start] + before + "```" + block + "```" + after)
    return block.removeprefix("text\n")


class Demo:
    """A running ``vk-trio demo`` with its output (stdout) and log (stderr) collected as they
    come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = ""
        self.log = ""
        self._grew = trio.Event()
        self._read = trio.Event()

    async def read(self) -> None:
        """Collect both streams until the process closes them."""
        assert self.process.stdout is not None and self.process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain, self.process.stderr, "log")
            await self._drain(self.process.stdout, "stdout")
        self._read.set()

    async def _drain(self, stream: trio.abc.ReceiveStream, into: str) -> None:
        async for chunk in stream:
            setattr(self, into, getattr(self, into) + chunk.decode())
            self._grew.set()
            self._grew = trio.Event()

    async def wait_for(self, text: str, within: float = 60) -> None:
        with trio.fail_after(within):
            while text not in self.stdout:
                await self._grew.wait()

    async def exit_code(self, within: float = 90) -> int:
        """Wait for the process to end and its output to be read to the end."""
        with trio.fail_after(within):
            code = await self.process.wait()
            await self._read.wait()
        return code


async def start_demo(
    nursery: trio.Nursery, tmp_path: Path, *args: str, path: str = "/usr/bin:/bin"
) -> Demo:
    """Start the demo with its temporary folders under ``tmp_path/tmp``, to check that it
    leaves none."""
    (tmp_path / "tmp").mkdir()
    command = [sys.executable, "-m", "vk_trio", "demo", "--boot-seconds", "1", *args]
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"TMPDIR": str(tmp_path / "tmp"), "PATH": path},
            check=False,
        )
    )
    demo = Demo(process)
    nursery.start_soon(demo.read)
    return demo


def assert_clean_exit(tmp_path: Path, demo: Demo) -> None:
    assert "Traceback" not in demo.log and "Traceback" not in demo.stdout, demo.log[-3000:]
    assert list((tmp_path / "tmp").iterdir()) == []  # no vk-trio-demo-* folder left


async def test_a_whole_run_passes_and_prints_the_readme_sample(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    demo = await start_demo(nursery, tmp_path)
    code = await demo.exit_code()
    assert code == 0, demo.stdout
    assert "instances leaked:       0" in demo.stdout
    assert re.search(r"june-services/june-gpu-services\s+1/1", demo.stdout)
    assert_clean_exit(tmp_path, demo)
    problem = await probe()
    assert problem is None, f"the README's sample is the demo with its sandbox: {problem}"
    assert "pods run:               4" in demo.stdout
    assert "default/config-reader read its ConfigMap: mode=demo" in demo.stdout
    update = os.environ.get("VK_TRIO_UPDATE_README") == "1"
    sample = readme_sample(replace_with=demo.stdout if update else None)
    assert mask(sample) == mask(demo.stdout), (
        "README's demo sample differs from the demo's output; rerun this test with "
        "VK_TRIO_UPDATE_README=1 to rewrite it, or paste this in:\n" + demo.stdout
    )


@pytest.mark.long
async def test_without_the_sandbox_it_says_what_is_missing_and_runs_the_rest(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    demo = await start_demo(nursery, tmp_path, path=str(tmp_path / "empty"))  # no unshare
    code = await demo.exit_code()
    assert code == 0, demo.stdout
    [line] = [line for line in demo.stdout.splitlines() if "no sandbox here" in line]
    assert "apt-get install util-linux" in line
    assert "pod default/config-reader: skipped, it needs the vk-trio agent" in demo.stdout
    assert "pods run:               3" in demo.stdout
    assert "instances leaked:       0" in demo.stdout
    assert_clean_exit(tmp_path, demo)


@pytest.mark.long
async def test_ctrl_c_while_holding_stops_cleanly(nursery: trio.Nursery, tmp_path: Path) -> None:
    demo = await start_demo(nursery, tmp_path, "--hold")
    await demo.wait_for("Ctrl-C to stop")
    demo.process.send_signal(signal.SIGINT)
    code = await demo.exit_code(within=60)
    assert "instances leaked: 0" in demo.stdout
    assert code == 0, demo.stdout
    assert_clean_exit(tmp_path, demo)


async def test_ctrl_c_during_a_run_stops_cleanly_with_130(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    demo = await start_demo(nursery, tmp_path)
    await demo.wait_for("pod june-services/llm-rtx3090 created")
    demo.process.send_signal(signal.SIGINT)
    code = await demo.exit_code(within=60)
    assert code == 130, demo.stdout
    assert "Ctrl-C: deleting what the demo applied" in demo.stdout
    assert "instances leaked: 0" in demo.stdout
    assert "every pod is Running" not in demo.stdout
    assert_clean_exit(tmp_path, demo)
