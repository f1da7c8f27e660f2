"""Regenerate ``vk_trio/devtools/sim/data/openapi-schemas.json``, the schemas the Kubernetes
stand-in serves at ``/openapi/v3`` and checks writes against
(``vk_trio.devtools.sim.kube.openapi``).

Why a generated file: kubectl validates what it applies by asking the server for its OpenAPI
(and the server rejects unknown fields when kubectl asks for strict validation), so the
stand-in needs the real schemas of every kind it serves. The ``kubernetes-validate`` package (a
dev dependency) ships them for each Kubernetes release; the stand-in ships in the product, so it
carries a compact copy instead: only the kinds it serves and what they reference, with the
descriptions dropped and the JSON Schema spellings turned back into OpenAPI v3 ones
(``type: [string, "null"]`` -> ``type: string``, ``$defs`` -> ``components/schemas``).

    .venv/bin/python tools/kube_openapi_schemas.py          # rewrite the file
    .venv/bin/python tools/kube_openapi_schemas.py --check  # exit 1 if it is stale

``tests/devtools/sim/kube/test_openapi.py`` runs the check, so adding a kind to ``kinds.RESOURCES``
without regenerating fails the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_FILE = ROOT / "vk_trio" / "devtools" / "sim" / "data" / "openapi-schemas.json"
sys.path.insert(0, str(ROOT))

from vk_trio.devtools.sim.kube import SERVER_VERSION  # noqa: E402
from vk_trio.devtools.sim.kube.kinds import RESOURCES  # noqa: E402

EXTRA_KINDS = (
    ("certificates.k8s.io", "v1", "CertificateSigningRequest"),
    ("authentication.k8s.io", "v1", "TokenReview"),
    ("authorization.k8s.io", "v1", "SubjectAccessReview"),
)
"""Kinds the stand-in answers outside ``RESOURCES`` (reviews and CSRs a node sends)."""

KEEP = frozenset(
    {
        "type",
        "format",
        "properties",
        "items",
        "additionalProperties",
        "required",
        "oneOf",
        "$ref",
        "x-kubernetes-group-version-kind",
        "x-kubernetes-patch-strategy",
        "x-kubernetes-patch-merge-key",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-unions",
    }
)
"""What kubectl and the stand-in read; descriptions and enums added by the JSON Schema
conversion (``kind``/``apiVersion`` pinned to one value) are dropped."""


def convert(schema: Any) -> Any:
    """One schema node, JSON Schema spelling -> OpenAPI v3 spelling, trimmed to ``KEEP``."""
    if isinstance(schema, list):
        return [convert(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in KEEP:
            continue
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            value = types[0] if len(types) == 1 else types
        elif key == "$ref":
            value = value.replace("#/$defs/", "#/components/schemas/")
        elif key == "properties":
            value = {name: convert(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "oneOf"):
            value = convert(value)
        out[key] = value
    return out


def references(schema: Any) -> set[str]:
    """Names of the schemas ``schema`` points at."""
    if isinstance(schema, list):
        return set().union(*(references(item) for item in schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set()
    for key, value in schema.items():
        if key == "$ref":
            found.add(value.rsplit("/", 1)[-1])
        else:
            found |= references(value)
    return found


def generate() -> str:
    version = SERVER_VERSION["gitVersion"].split("-")[0].removeprefix("v")
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads((source / f"v{version}-local" / "_definitions.json").read_text())
    defs: dict[str, Any] = definitions["$defs"]
    wanted = {(r.group, r.version, r.kind) for r in RESOURCES} | set(EXTRA_KINDS)
    roots = [
        name
        for name, schema in defs.items()
        if any(
            (gvk["group"], gvk["version"], gvk["kind"]) in wanted
            for gvk in schema.get("x-kubernetes-group-version-kind", [])
        )
    ]
    missing = wanted - {
        (g["group"], g["version"], g["kind"])
        for name in roots
        for g in defs[name]["x-kubernetes-group-version-kind"]
    }
    if missing:
        raise SystemExit(f"no schema for {sorted(missing)} in Kubernetes {version}")
    keep: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep[name] = convert(defs[name])
        pending.extend(references(keep[name]) - keep.keys())
    document = {"kubernetesVersion": version, "schemas": dict(sorted(keep.items()))}
    return json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = generate()
    if args.check:
        stale = not SCHEMAS_FILE.exists() or SCHEMAS_FILE.read_text() != text
        if stale:
            print(f"{SCHEMAS_FILE} is stale: run {Path(__file__).relative_to(ROOT)}")
        return 1 if stale else 0
    SCHEMAS_FILE.write_text(text)
    print(f"wrote {SCHEMAS_FILE} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
