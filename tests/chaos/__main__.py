"""``python -m tests.chaos``: run one soak, print its table, exit 1 if an invariant broke.

Exit status: 0 every invariant held, 1 some invariant was violated (see the table and the
run directory), 2 the soak could not run (bad flags, a process that would not start or that
exited on its own).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from tests.chaos.plan import parse_args
from tests.chaos.processes import ChildFailed
from tests.chaos.report import render
from tests.chaos.soak import soak


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    run_dir = Path(plan.run_dir or tempfile.mkdtemp(prefix="vk-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"chaos soak: logs and evidence in {run_dir}", flush=True)
    try:
        report = trio.run(soak, plan, run_dir)
    except ChildFailed as exc:
        print(f"chaos soak could not run: {exc}", file=sys.stderr)
        return 2
    encoded = msgspec.json.format(msgspec.json.encode(report))
    (run_dir / "report.json").write_bytes(encoded)
    if plan.json_path is not None:
        Path(plan.json_path).write_bytes(encoded)
    print(render(report), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
