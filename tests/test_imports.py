"""The package's layers hold: import-linter's contracts (``[tool.importlinter]`` in
pyproject.toml) are checked by the one test command, so CI enforces them.

The contracts: ``node`` and ``kubelet`` know no Vast (neither ``vast`` nor ``provider``);
``vast`` and ``kube`` are clients that import neither each other nor anything above them;
``registry`` imports none of them either;
``provider`` never imports the wiring (``app``, ``cli``); nothing but ``devtools`` itself and
the tests imports ``devtools`` (``dryrun --simulate`` is the one declared exception); nothing
in the package imports ``tests``; no two modules of one package import each other, at any
depth (``acyclic_siblings``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_are_kept() -> None:
    assert LINT_IMPORTS.exists(), "import-linter is not installed (pip install -e '.[dev]')"
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
