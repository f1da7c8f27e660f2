"""The package's layers hold: what each part may import is checked, not hoped for.

``vast`` and ``kube`` are clients that never import each other or the lifecycle; ``kubelet``
(the kubelet API) knows ``kube`` and no provider; ``offers``
is pure selection; ``pods`` (the lifecycle) never imports the app that wires it; the
simulators are stand-ins that the product path never imports; ``chaos`` is a test harness
(``python -m vk_trio.chaos``) that may use the product and the simulators, but nothing of
the product, the commands or the simulators imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vk_trio"

FORBIDDEN = {
    "vk_trio.vast": ("vk_trio.kube", "vk_trio.pods", "vk_trio.app", "vk_trio.sim"),
    "vk_trio.kube": ("vk_trio.vast", "vk_trio.pods", "vk_trio.app", "vk_trio.sim"),
    "vk_trio.offers": ("vk_trio.kube", "vk_trio.pods", "vk_trio.app", "vk_trio.sim"),
    "vk_trio.pods": ("vk_trio.app", "vk_trio.demo", "vk_trio.cli", "vk_trio.sim", "vk_trio.chaos"),
    "vk_trio.app": ("vk_trio.sim", "vk_trio.demo", "vk_trio.chaos"),
    "vk_trio.sim": (
        "vk_trio.pods",
        "vk_trio.app",
        "vk_trio.kube",
        "vk_trio.kubelet",
        "vk_trio.chaos",
    ),
    "vk_trio.kubelet": ("vk_trio.vast", "vk_trio.pods", "vk_trio.app", "vk_trio.sim"),
    "vk_trio.cli": ("vk_trio.chaos",),
    "vk_trio.demo": ("vk_trio.chaos",),
    "vk_trio.dryrun": ("vk_trio.chaos",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_module_respects_its_layer(path: Path) -> None:
    name = module_name(path)
    for layer, forbidden in FORBIDDEN.items():
        if name == layer or name.startswith(layer + "."):
            bad = {i for i in imports(path) for f in forbidden if i == f or i.startswith(f + ".")}
            assert not bad, f"{name} ({layer}) must not import {sorted(bad)}"
