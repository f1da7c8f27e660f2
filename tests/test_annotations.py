"""One annotation table: the README shows exactly what ``vk_trio.annotations`` declares, and
the code reads and writes only keys declared there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vk_trio.annotations import NAMESPACE, NODE_SPEND, PREFIX, READ, WRITTEN, markdown_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("table", [READ, WRITTEN, NAMESPACE], ids=["read", "written", "namespace"])
def test_the_readme_renders_the_table(table: tuple[object, ...]) -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table(table) in readme  # type: ignore[arg-type]


def test_every_key_in_the_code_is_declared() -> None:
    declared = {a.key for a in (*READ, *WRITTEN, *NAMESPACE)} | {NODE_SPEND}
    used: set[str] = set()
    for path in (ROOT / "vk_trio").rglob("*.py"):
        if "sim" in path.parts:
            continue
        used |= set(re.findall(r'"(vast\.ai/[a-z-]+)"', path.read_text()))
    assert used <= declared, sorted(used - declared)
    assert all(key.startswith(PREFIX) for key in declared)
