"""``vk-trio offers``: which offers a pod's annotations would buy, and why the rest would not.

A dry run answers "why is my pod Pending?" before the pod exists: it parses the annotations
exactly as the node does (``provider.selection``), searches once with the node's query and once
with a broader one, and prints the offers that fit (best first, the first one is what the node
would buy) and the others with the constraint that rules each out. It never buys anything.

Input is a manifest (``-f pod.yaml``: a Pod, or a workload whose ``spec.template`` is one) and/or
``--annotations k=v ...`` with ``--gpus N``. It searches the real API when ``VAST_API_KEY`` is
set (``VAST_API_URL`` overrides the base URL), and otherwise, or with ``--simulate``, an
in-process simulator with its seeded marketplace.

Exit status: 0 when at least one offer fits, 1 when none does, 2 when the input or the
annotations are invalid, 3 when the search itself failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec
import trio
import yaml

from vk_trio.annotations import PREFIX
from vk_trio.errors import VkError
from vk_trio.kube.models import ObjectMeta, OwnerReference, Pod
from vk_trio.logs import configure_logging
from vk_trio.node.admission import unsupported_reason
from vk_trio.provider.requirements import (
    ANNOTATIONS as OFFER_ANNOTATIONS,
)
from vk_trio.provider.requirements import (
    GPU_RESOURCE,
    AnnotationError,
    Requirements,
    parse_requirements,
)
from vk_trio.provider.selection import (
    CONSTRAINTS,
    Selection,
    build_query,
    explain_query,
    offer_price,
    select,
)
from vk_trio.provider.spec import SpecError, chosen_container
from vk_trio.vast import Offer, Pacer, VastClient

__all__ = ["add_arguments", "main"]

EXIT_MATCH = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2
EXIT_SEARCH_FAILED = 3

DEFAULT_API_URL = "https://console.vast.ai"

_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
"""Workloads whose ``spec.template`` is the pod; ``CronJob`` nests one level deeper."""


class InputError(Exception):
    """The manifest or flags cannot be read; the message says what to fix."""


MARKET_SEED = 7
"""The simulated marketplace's seed: the demo's (``vk-trio demo --seed``), so that a dry run
with ``--simulate`` picks the very offer the demo's node buys."""

DESCRIPTION = """\
Show which Vast.ai offers a pod would get, and why the others would not. Nothing is bought.

Give a manifest (-f: a Pod, or a Deployment, StatefulSet, DaemonSet, Job or CronJob with a pod
template) and/or annotations (-a vast.ai/gpu-type="RTX 3060" price-max=0.30; the vast.ai/
prefix may be left out) and --gpus. The node's own rules decide: the offers that fit are listed
best first, and the first is the one the node would buy; the others are listed with the
constraint each fails.

The real Vast.ai API is searched when VAST_API_KEY is set (VAST_API_URL overrides its address);
otherwise, or with --simulate, the built-in simulator's marketplace, the same one the demo uses.

Exit status: 0 an offer fits; 1 none does, or the node refuses the pod (DaemonSet and static
pods); 2 the manifest or the annotations are invalid; 3 the search failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``vk-trio offers``."""
    parser.description = DESCRIPTION
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        metavar="MANIFEST",
        help="a Pod manifest, or a workload (Deployment, StatefulSet, DaemonSet, Job, CronJob) "
        "with a pod template",
    )
    parser.add_argument(
        "-a",
        "--annotations",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help='annotations, e.g. vast.ai/gpu-type="RTX 3060" or gpu-type="RTX 3060" (a key '
        "without a prefix gets vast.ai/); they override the manifest's",
    )
    parser.add_argument(
        "--gpus",
        metavar="N",
        help=f'GPUs per instance, as resources.limits["{GPU_RESOURCE}"] would say (default: '
        "the manifest's, else 1)",
    )
    parser.add_argument("--limit", type=int, default=10, metavar="N", help="offers to list")
    parser.add_argument(
        "--show-query", action="store_true", help="print the search query sent to Vast"
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="search the built-in simulator even when VAST_API_KEY is set",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=MARKET_SEED,
        help="the simulator's marketplace seed, the demo's",
    )
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr")


def main(args: argparse.Namespace) -> int:
    """Run the dry run; see the module docstring for the exit status."""
    configure_logging(args.log_level, json=False)
    out: TextIO = sys.stdout
    try:
        annotations, gpu_limit, owner = _inputs(args)
        refusal = unsupported_reason(
            Pod(metadata=ObjectMeta(annotations=annotations, owner_references=owner))
        )
        if refusal is not None:
            print(f"The node buys nothing for this pod: {refusal}.", file=out)
            return EXIT_NO_MATCH
        req = parse_requirements(annotations, gpu_limit=gpu_limit)
    except AnnotationError as exc:
        print("error: the pod's annotations are invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (InputError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    api_key = os.environ.get("VAST_API_KEY", "")
    url = os.environ.get("VAST_API_URL", DEFAULT_API_URL)
    if args.simulate or not api_key:
        where = f"the built-in simulator (seed {args.seed})"
        search = functools.partial(_search_simulator, req, seed=args.seed)
    else:
        where = url
        search = functools.partial(_search, req, api_key=api_key, base_url=url)
    print(f"Requirements: {req.describe()}", file=out)
    print(f"Searching: {where}; nothing is bought", file=out)
    if args.show_query:
        print("Query (POST /api/v0/bundles/):", file=out)
        print(_query_text(build_query(req)), file=out)
    try:
        offers = trio.run(search)
    except VkError as exc:
        print(f"error: the search failed: {exc}", file=sys.stderr)
        return EXIT_SEARCH_FAILED
    selection = select(offers, req)
    _report(selection, limit=args.limit, out=out)
    return EXIT_MATCH if selection.ranked else EXIT_NO_MATCH


# --------------------------------------------------------------------------------------------
# Input


def _inputs(
    args: argparse.Namespace,
) -> tuple[dict[str, str], str | None, tuple[OwnerReference, ...]]:
    """Annotations, GPU limit and owner of the pod from the manifest (if any), flags over them."""
    annotations: dict[str, str] = {}
    gpu_limit: str | None = None
    owner: tuple[OwnerReference, ...] = ()
    if args.file is not None:
        pod = _pod_from_manifest(args.file)
        annotations.update(pod.metadata.annotations)
        owner = pod.metadata.owner_references
        resources = chosen_container(pod).resources
        gpu_limit = resources.limits.get(GPU_RESOURCE, resources.requests.get(GPU_RESOURCE))
    for item in args.annotations:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f'--annotations: "{item}" is not KEY=VALUE')
        # "price-max=0.3" means vast.ai/price-max: -a is for the annotations that choose offers.
        key = key if "/" in key else PREFIX + key
        if key not in OFFER_ANNOTATIONS:
            raise InputError(
                f"--annotations: {key} is not an annotation the node reads to choose offers; "
                f"known: {', '.join(OFFER_ANNOTATIONS)} (the vast.ai/ prefix may be left out)"
            )
        annotations[key] = value
    if args.gpus is not None:
        gpu_limit = args.gpus
    return annotations, gpu_limit, owner


def _pod_from_manifest(path: Path) -> Pod:
    """The first pod in the manifest; a workload's template is owned by the workload (only the
    owner's kind matters: the node refuses DaemonSet pods)."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    for owner_kind, template in _pod_templates(documents):
        try:
            pod = msgspec.convert(_stringify_quantities(template), Pod, strict=False)
        except msgspec.ValidationError as exc:
            raise InputError(f"{path}: the pod spec is invalid: {exc}") from None
        if owner_kind is not None:
            pod.metadata.owner_references = (OwnerReference(kind=owner_kind, controller=True),)
        return pod
    raise InputError(
        f"{path} holds no Pod and no workload with a pod template"
        f" ({', '.join(sorted(_TEMPLATE_KINDS | {'CronJob'}))})"
    )


def _pod_templates(documents: Iterable[Any]) -> Iterable[tuple[str | None, Mapping[str, Any]]]:
    """Every pod (or pod template, with its workload's kind) in the documents, in order;
    ``List`` items included."""
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        kind = document.get("kind")
        spec = document.get("spec")
        if kind == "List":
            yield from _pod_templates(document.get("items") or [])
        elif kind == "Pod":
            yield None, document
        elif kind in _TEMPLATE_KINDS and isinstance(spec, Mapping):
            yield from ((kind, template) for template in _mapping_at(spec, "template"))
        elif kind == "CronJob" and isinstance(spec, Mapping):
            job = next(iter(_mapping_at(spec, "jobTemplate")), {})
            yield from (
                ("Job", template) for template in _mapping_at(job.get("spec") or {}, "template")
            )


def _mapping_at(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key)
    return [value] if isinstance(value, Mapping) else []


def _stringify_quantities(template: Mapping[str, Any]) -> Any:
    """YAML reads ``nvidia.com/gpu: 1`` as an int; the API server (and our model) has strings."""
    doc = json.loads(json.dumps(template, default=str))
    spec = doc.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    for container in containers if isinstance(containers, list) else []:
        resources = container.get("resources") if isinstance(container, dict) else None
        if not isinstance(resources, dict):
            continue
        for kind in ("limits", "requests"):
            values = resources.get(kind)
            if isinstance(values, dict):
                resources[kind] = {key: str(value) for key, value in values.items()}
    return doc


# --------------------------------------------------------------------------------------------
# Searching


async def _search(
    req: Requirements, *, api_key: str, base_url: str, pacer: Pacer | None = None
) -> list[Offer]:
    """The node's query plus the broader explain query, merged (each offer once).

    The strict query finds what would be bought; the broad one returns the near-misses whose
    rejection reasons tell the user which annotation to relax.
    """
    async with VastClient(api_key=api_key, base_url=base_url, pacer=pacer) as client:
        strict = await client.search_offers(build_query(req))
        broad = await client.search_offers(explain_query(req))
    merged = {offer.id: offer for offer in broad}
    merged.update({offer.id: offer for offer in strict})
    return list(merged.values())


async def _search_simulator(req: Requirements, *, seed: int) -> list[Offer]:
    """Search an in-process simulator, served on a loopback port for the duration."""
    from vk_trio.devtools.sim.vast import VastSim, VastSimConfig

    sim = VastSim(VastSimConfig(seed=seed, rate_limits="off"))
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(sim.serve)
        try:
            return await _search(req, api_key="dry-run", base_url=url, pacer=Pacer(scale=0))
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------
# Output


def _query_text(query: Mapping[str, Any]) -> str:
    """The query as JSON with one condition per line: readable, and still valid JSON."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in query.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  "
            + "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip(),
            file=out,
        )


def _columns(offer: Offer, req: Requirements) -> list[str]:
    return [
        str(offer.id),
        offer.gpu_name,
        str(offer.num_gpus),
        f"{offer_price(offer, req):.4f}",
        f"{offer.gpu_ram / 1000:.1f}",
        f"{offer.disk_space:.0f}",
        f"{offer.reliability:.3f}",
        offer.verification or "-",
        offer.geolocation or "-",
    ]


def _report(selection: Selection, *, limit: int, out: TextIO) -> None:
    req = selection.requirements
    price = "BID $/H" if req.interruptible else "$/H"
    header = [
        "OFFER",
        "GPU",
        "NUM",
        price,
        "GPU_RAM_GB",
        "DISK_GB",
        "RELIAB",
        "VERIFICATION",
        "LOCATION",
    ]
    ranked = selection.ranked
    if ranked:
        shown = ranked[: max(limit, 0)]
        print(f"\nMatching offers, best first ({len(shown)} of {len(ranked)} shown):", file=out)
        _table(["#", *header], [[str(i), *_columns(o, req)] for i, o in enumerate(shown, 1)], out)
    print(file=out)
    print(selection.describe(), file=out)
    if ranked:
        print(f"Would buy offer {ranked[0].id} (nothing was bought).", file=out)
    rejected = sorted(selection.rejected, key=lambda item: offer_price(item[0], req))
    if not rejected:
        return
    print(file=out)
    print(f"Rejected offers ({len(rejected)}), by constraint:", file=out)
    for key, count in sorted(selection.rejected_by.items(), key=lambda item: -item[1]):
        print(f"  {CONSTRAINTS[key]}: {count}", file=out)
    shown_rejected = rejected[: max(limit, 0)]
    if shown_rejected:
        print(
            f"Cheapest rejected ({len(shown_rejected)} of {len(rejected)} shown,"
            " with the first constraint each fails):",
            file=out,
        )
        _table(
            [*header, "REASON"],
            [[*_columns(o, req), rejection.reason] for o, rejection in shown_rejected],
            out,
        )
