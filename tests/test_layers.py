"""The package's layers hold: what each part may import is checked, not hoped for.

``vast`` and ``kube`` are clients that import neither each other, the kubelet half (``node``)
nor the provider; ``node`` knows Kubernetes and its own ``Provider`` protocol, never Vast or
the Vast provider; ``kubelet`` (the kubelet HTTP API) knows Kubernetes and the node's
``Provider`` protocol, never Vast or the provider; the simulators are stand-ins that
nothing on the product path imports; the chaos soak lives in ``tests/`` and nothing in the
package imports tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vk_trio"

PRODUCT_MUST_NOT_IMPORT = ("vk_trio.sim", "vk_trio.bench", "tests")
FORBIDDEN = {
    "vk_trio.vast": ("vk_trio.kube", "vk_trio.node", "vk_trio.provider", "vk_trio.app"),
    "vk_trio.kube": ("vk_trio.vast", "vk_trio.node", "vk_trio.provider", "vk_trio.app"),
    "vk_trio.node": ("vk_trio.vast", "vk_trio.provider", "vk_trio.app"),
    "vk_trio.kubelet": ("vk_trio.vast", "vk_trio.provider", "vk_trio.app"),
    "vk_trio.provider": ("vk_trio.app", "vk_trio.demo", "vk_trio.cli"),
    "vk_trio.app": (),
    "vk_trio.sim": (
        "vk_trio.node",
        "vk_trio.provider",
        "vk_trio.app",
        "vk_trio.kube",
        "vk_trio.kubelet",
    ),
    "vk_trio.cli": (),
    "vk_trio.dryrun": (),
    "vk_trio.bench": ("tests",),  # it runs the simulators, as the demo does
    "vk_trio": ("tests",),
}
"""Layer → what it must not import; every product layer also stays off ``sim`` and tests."""
PRODUCT = (
    "vk_trio.vast",
    "vk_trio.kube",
    "vk_trio.node",
    "vk_trio.kubelet",
    "vk_trio.provider",
    "vk_trio.app",
)


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
            if layer in PRODUCT:
                forbidden = (*forbidden, *PRODUCT_MUST_NOT_IMPORT)
            bad = {i for i in imports(path) for f in forbidden if i == f or i.startswith(f + ".")}
            assert not bad, f"{name} ({layer}) must not import {sorted(bad)}"
