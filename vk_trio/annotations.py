"""Every annotation vk-trio reads or writes, in one table.

The code takes each key from here, ``vk-trio offers`` checks typed keys against it, and the
README's two annotation tables are rendered from it (``tests/test_annotations.py`` keeps them
equal), so a key, its example and its meaning are written down exactly once.

``READ`` are the user's contract (what the pod asks for); ``WRITTEN`` are vk-trio's record of
what it bought, readable with ``kubectl get pod -o yaml`` and read back after a restart;
``NAMESPACE`` are on a Namespace: its budget, and what the nodes hold against it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "AGENT",
    "BUYING",
    "CONTAINER",
    "COST",
    "COST_INSTANCES",
    "DISK",
    "ENDPOINTS",
    "GPU",
    "GPU_FALLBACKS",
    "GPU_TYPE",
    "INIT_IN_MAIN_IMAGE",
    "INSTANCE_ID",
    "INTERRUPTIBLE",
    "LOCATION",
    "MACHINE_ID",
    "MEMORY",
    "MIN_CUDA",
    "MIN_RELIABILITY",
    "MIRROR",
    "NAMESPACE",
    "NAMESPACE_HOLDS",
    "NAMESPACE_MAX_HOURLY",
    "NAMESPACE_MAX_INSTANCES",
    "NODE_SPEND",
    "OFFER_ID",
    "ON_OUTBID",
    "OUTBID_GRACE",
    "PREFIX",
    "PRICE",
    "PRICE_MAX",
    "READ",
    "REGION",
    "SERVICE_SELECTOR",
    "STARTUP_TIMEOUT",
    "VERIFIED",
    "WRITTEN",
    "Annotation",
    "markdown_table",
]

PREFIX = "vast.ai/"


class Annotation(NamedTuple):
    key: str
    example: str
    """As the README shows it: backquoted values, comma separated."""
    meaning: str
    """What it does, and in parentheses what happens without it (for ``READ``)."""


# -- read: what the pod asks for ------------------------------------------------------------

GPU_TYPE = "vast.ai/gpu-type"
GPU_FALLBACKS = "vast.ai/gpu-fallbacks"
PRICE_MAX = "vast.ai/price-max"
REGION = "vast.ai/region"
MEMORY = "vast.ai/memory"
DISK = "vast.ai/disk"
MIN_RELIABILITY = "vast.ai/min-reliability"
VERIFIED = "vast.ai/verified"
MIN_CUDA = "vast.ai/min-cuda"
INTERRUPTIBLE = "vast.ai/interruptible"
CONTAINER = "vast.ai/container"
STARTUP_TIMEOUT = "vast.ai/startup-timeout"
SERVICE_SELECTOR = "vast.ai/selector"
ON_OUTBID = "vast.ai/on-outbid"
OUTBID_GRACE = "vast.ai/outbid-grace"
AGENT = "vast.ai/agent"
INIT_IN_MAIN_IMAGE = "vast.ai/init-in-main-image"

READ: tuple[Annotation, ...] = (
    Annotation(GPU_TYPE, '`"RTX 3060"`', "preferred GPU model (any model, cheapest first)"),
    Annotation(
        GPU_FALLBACKS, '`"RTX 3060 Ti,RTX 4060,RTX 3090"`', "other models, in order of preference"
    ),
    Annotation(
        PRICE_MAX,
        '`"0.30"`',
        "USD per hour for the whole instance, storage included (no cap)",
    ),
    Annotation(
        REGION,
        '`"North America"`, `"Europe"`, `"Asia"`, `"US,CA"`',
        "where the host is (anywhere)",
    ),
    Annotation(MEMORY, '`"12GB"`, `"12Gi"`, `"12000MB"`', "minimum GPU memory (any)"),
    Annotation(DISK, '`"50GB"`, `"50"`', "instance disk in GB (20)"),
    Annotation(MIN_RELIABILITY, '`"0.98"`, `"98%"`', "host reliability (0.9)"),
    Annotation(VERIFIED, '`"false"`', "only Vast-verified hosts (true)"),
    Annotation(MIN_CUDA, '`"12.1"`', "highest CUDA the driver supports (any)"),
    Annotation(
        INTERRUPTIBLE,
        '`"true"`',
        "bid at the offer's `min_bid`; bid plus storage never above `price-max` (false)",
    ),
    Annotation(
        CONTAINER, '`"model"`', "which container runs, in a multi-container pod (the first)"
    ),
    Annotation(
        STARTUP_TIMEOUT,
        '`"10m"`, `"900s"`, `"1h30m"`',
        "time from purchase to running before another machine is tried "
        "(the node's `--startup-timeout`, 15m)",
    ),
    Annotation(
        ON_OUTBID,
        '`"wait"`, `"rebid"`, `"replace"`',
        "what an outbid interruptible pod does (see *Outbid interruptible pods*): wait for "
        "Vast to resume its instance; raise the bid to `price-max` and wait; or buy a new "
        "instance once `outbid-grace` is over (wait)",
    ),
    Annotation(
        OUTBID_GRACE,
        '`"10m"`, `"1h"`',
        "how long an outbid instance is kept for Vast to resume; then `wait`/`rebid` count it "
        "lost (`restartPolicy` decides) and `replace` buys a new one (10m)",
    ),
    Annotation(
        AGENT,
        '`"true"`, `"false"`',
        "run the pod under the vk-trio agent inside its instance (see *The agent*) even when it "
        "needs nothing only the agent gives (a pod with volumes, init containers, exec probes, "
        "lifecycle hooks or its IP in its env always does; one with Secret env does when the "
        "node has an agent); `false` refuses a pod that needs it",
    ),
    Annotation(
        INIT_IN_MAIN_IMAGE,
        '`"true"`',
        "run init containers whose image differs from the container's in the container's "
        "image (one instance runs one image) (refused)",
    ),
    Annotation(
        SERVICE_SELECTOR,
        '`"app=june-gpu-services"`',
        "on a **Service** without `spec.selector`: vk-trio writes its EndpointSlices with the "
        "public endpoints of the pods it selects (see *Services*) (no endpoints)",
    ),
)

# -- written: vk-trio's record on the pod ---------------------------------------------------

INSTANCE_ID = "vast.ai/instance-id"
OFFER_ID = "vast.ai/offer-id"
MACHINE_ID = "vast.ai/machine-id"
GPU = "vast.ai/gpu"
PRICE = "vast.ai/price-per-hour"
LOCATION = "vast.ai/location"
ENDPOINTS = "vast.ai/endpoints"
BUYING = "vast.ai/buying"
COST = "vast.ai/cost"
COST_INSTANCES = "vast.ai/cost-instances"

WRITTEN: tuple[Annotation, ...] = (
    Annotation(INSTANCE_ID, "`12345678`", "the instance bought for the pod"),
    Annotation(OFFER_ID, "`9876543`", "the offer it was bought from"),
    Annotation(MACHINE_ID, "`4242`", "the host machine"),
    Annotation(GPU, "`1x RTX 3060`", "what it has"),
    Annotation(PRICE, "`0.1150`", "USD per hour it costs, storage included"),
    Annotation(LOCATION, "`Texas, US`", "where the host is"),
    Annotation(
        ENDPOINTS,
        '`{"8000/tcp":"203.0.113.66:53265"}`',
        "container port → public `ip:port` (Vast maps ports to random host ports)",
    ),
    Annotation(
        BUYING,
        "`offer 9876543 at 2026-01-02T03:04:05Z`",
        "present only while a create request is in flight (see *Money safety*)",
    ),
    Annotation(
        COST,
        "`0.052311`",
        "USD its instances have cost so far, replaced ones included; updated each slow "
        "sweep, final when the pod ends (see *What it cost*)",
    ),
    Annotation(
        COST_INSTANCES,
        '`{"30012345":0.041200,"30012399":0.011111}`',
        "the same, per instance: what a restarted node adds to",
    ),
)

# -- on a Namespace: a budget for the pods in it, across every vk-trio node -----------------

NAMESPACE_MAX_HOURLY = "vast.ai/max-hourly-spend"
NAMESPACE_MAX_INSTANCES = "vast.ai/max-instances"
NAMESPACE_HOLDS = "vast.ai/budget-holds"

NAMESPACE: tuple[Annotation, ...] = (
    Annotation(
        NAMESPACE_MAX_HOURLY,
        '`"1.00"`',
        "USD per hour all pods of the namespace may rent together, on every vk-trio node (no cap)",
    ),
    Annotation(
        NAMESPACE_MAX_INSTANCES,
        '`"3"`',
        "instances the pods of the namespace may rent together, on every vk-trio node (no cap)",
    ),
    Annotation(
        NAMESPACE_HOLDS,
        '`{"vast-gpu-a":{"<pod uid>":{"pod":"train-0","usd":0.3}}}`',
        "written by vk-trio: what each node's pods hold or rent against those caps "
        "(see *Budgets per namespace*)",
    ),
)

NODE_SPEND = "vast.ai/spend-per-hour"
"""On the Node: USD per hour its instances bill now (``kubectl describe node`` shows it)."""

MIRROR = "kubernetes.io/config.mirror"
"""Not ours: the API server's mark of a static pod's mirror (it runs on some kubelet's disk)."""


def markdown_table(annotations: tuple[Annotation, ...]) -> str:
    """The README table of ``annotations`` (``READ``, ``WRITTEN`` or ``NAMESPACE``), without a
    final newline."""
    rows = ["| annotation | example | meaning |", "|---|---|---|"]
    rows += [f"| `{a.key}` | {a.example} | {a.meaning} |" for a in annotations]
    return "\n".join(rows)
