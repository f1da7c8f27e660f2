"""One soak, start to finish: start, churn and kill, settle, collect, audit.

The node is killed with SIGKILL at seeded moments, one in each equal slice of the soak, and
restarted after a seeded pause (pods keep being created and deleted meanwhile). A kill and
its restart are shielded from the end of the soak, so that the soak never ends with the node
half-killed or the kill uncounted. A node that exits on its own (a crash, a flag it does not
know) ends the soak at once: that is a harness failure, reported with its log, not a result.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import msgspec
import trio

from tests.chaos.audit import (
    Findings,
    LedgerRow,
    PodObject,
    audit,
    exposed,
    restarted_in_place,
)
from tests.chaos.market import write_market
from tests.chaos.plan import Plan, node_flags
from tests.chaos.processes import (
    ChildFailed,
    NodeProcess,
    Popen,
    Replicas,
    start_simulator,
    stop,
)
from tests.chaos.report import Context, Report, make_report, vast_numbers
from tests.chaos.workload import NAMESPACE, PODS, SECRET_VALUES, Workload
from vk_trio.devtools.sim.vast import Faults
from vk_trio.devtools.sim.vast.agent import AGENT_PATH
from vk_trio.provider.labels import label_owner

NODE = "vk-chaos-node"
Node = NodeProcess | Replicas
"""One ``vk-trio run``, or several electing a leader (``--replicas``)."""
API_KEY = "chaos-soak-key-0123456789"
SETTLE_POLL = 1.0
"""Seconds between audits while settling."""
STABLE_AUDITS = 3
"""Settled audits in a row (a few of the node's sweeps at ``--poll-slow=1``) that end it."""
PROGRESS_EVERY = 5
"""Seconds between progress lines while settling."""
AGENT_START_LINE = "container app started"
"""What the agent logs each time it starts the pod's container (``vk_trio.agent.container``);
its output is the instance's log."""
LOG_TRIES = 20
"""Attempts at reading an instance's log (rate limits, a result URL not uploaded yet)."""


class _Outbids:
    """How many outbids and resumes the soak made happen."""

    def __init__(self) -> None:
        self.outbid = 0
        self.resumed = 0


class _PodList(msgspec.Struct):
    items: list[PodObject]


class _Event(msgspec.Struct):
    reason: str = ""
    count: int = 1


class _EventList(msgspec.Struct):
    items: list[_Event]


async def soak(plan: Plan, run_dir: Path) -> Report:
    """Run the soak described by ``plan``, keeping logs and evidence in ``run_dir``."""
    children: list[Popen] = []
    node: Node | None = None
    try:
        vast_url = await _start(children, run_dir, "vast", *_vast_args(plan, run_dir))
        flags = node_flags(plan) + (await _agent_flags(vast_url, run_dir) if plan.agent else [])
        kubeconfig = run_dir / "kubeconfig"
        kube_url = await _start(children, run_dir, "kube", "--kubeconfig-out", str(kubeconfig))
        env = {
            "NODE_NAME": NODE,
            "VAST_API_KEY": API_KEY,
            "VAST_API_URL": vast_url,
            "KUBECONFIG": str(kubeconfig),
            "LOG_LEVEL": "INFO",
        }
        if plan.replicas > 1:
            node = Replicas(run_dir, env=env, flags=flags, count=plan.replicas, seed=plan.seed)
        else:
            node = NodeProcess(run_dir, env=env, flags=flags)
        async with (
            httpx.AsyncClient(base_url=vast_url) as vast,
            httpx.AsyncClient(base_url=kube_url) as kube,
        ):
            return await _soak(plan, run_dir, node, vast, kube)
    finally:
        if node is not None:
            node.stop()
        for child in children:
            stop(child)


def _vast_args(plan: Plan, run_dir: Path) -> list[str]:
    """``vk-trio sim vast`` flags: the soak's market, clock, limits and faults; in the agent
    mode, instances run their process for real (``--run-containers``), agent included."""
    return [
        *("--seed", str(plan.seed), "--boot-seconds", str(plan.boot_seconds)),
        *("--rate-limits", str(plan.rate_scale), "--api-key", API_KEY),
        *("--offers", str(write_market(run_dir, pods=plan.pods, seed=plan.seed))),
        *("--faults", msgspec.json.encode(plan.faults).decode()),
        *(["--run-containers"] if plan.agent else []),
    ]


async def _agent_flags(vast_url: str, run_dir: Path) -> list[str]:
    """``--agent-url``, once the simulator is known to serve the agent: where sandboxes
    cannot be made it falls back to ``--serve-ports`` (and serves no agent), and a soak of
    pods that all wait ``AgentUnavailable`` would only measure that."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(vast_url + AGENT_PATH)
    if answer.status_code != 200:
        raise ChildFailed(
            f"the Vast simulator cannot run instances' processes here (--run-containers); "
            f"see {run_dir / 'sim-vast.log'}"
        )
    return [f"--agent-url={vast_url}{AGENT_PATH}"]


async def _start(children: list[Popen], run_dir: Path, kind: str, *args: str) -> str:
    process, url = await start_simulator(run_dir, kind, *args)
    children.append(process)
    return url


async def _soak(
    plan: Plan, run_dir: Path, node: Node, vast: httpx.AsyncClient, kube: httpx.AsyncClient
) -> Report:
    workload = Workload(kube, plan, node=NODE)
    await workload.prepare()
    node.start()
    began = trio.current_time()
    kill_times: list[float] = []
    outbids = _Outbids()
    try:
        with trio.move_on_after(plan.duration):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(workload.run)
                nursery.start_soon(_kill_at_random, plan, node, kill_times)
                nursery.start_soon(_outbid_at_random, plan, vast, workload, outbids)
                nursery.start_soon(_watch, node)
    except* ChildFailed as failed:
        raise _first(failed) from None
    (await vast.post("/_sim/faults", content=msgspec.json.encode(Faults()))).raise_for_status()
    findings, settled_after = await _settle(plan, node, vast, kube, workload)
    stats = msgspec.json.decode((await vast.get("/_sim/stats")).content, type=dict[str, int])
    calls, errors, faults = vast_numbers(stats)
    context = Context(
        pods=plan.pods,
        duration=plan.duration,
        seed=plan.seed,
        pods_created=len(workload.records),
        pods_deleted=workload.deleted,
        pods_force_deleted=workload.forced,
        kills=node.kills,
        kill_times=[round(t - began, 1) for t in kill_times],
        node_starts=node.incarnations,
        replicas=plan.replicas,
        settled_after=settled_after,
        settle_bound=plan.settle,
        fault_rates=msgspec.structs.asdict(plan.faults),
        vast_calls=calls,
        vast_errors=errors,
        faults_seen=faults,
        outbids=outbids.outbid,
        resumes=outbids.resumed,
        node_events=await _event_reasons(kube),
        run_dir=str(run_dir),
        agent=plan.agent,
        agent_pods=sum(record.agent for record in workload.records.values()),
    )
    await _keep_evidence(run_dir, vast, kube)
    findings = msgspec.structs.replace(
        findings, secrets_exposed=exposed([API_KEY, *SECRET_VALUES], await _outputs(run_dir))
    )
    if plan.agent:
        findings = await _agent_findings(run_dir, vast, findings)
    return make_report(findings, context)


async def _agent_findings(run_dir: Path, vast: httpx.AsyncClient, findings: Findings) -> Findings:
    """The agent mode's two invariants, read once the soak is over (see ``audit``): the
    create requests holding a Secret value (without the agent, a Secret env var reaches the
    instance in the create request: that is how it gets there), and the processes under the
    agent not started exactly once on their instance (each count kept as evidence)."""
    starts = await _process_starts(vast, findings.agent_running)
    encoded = msgspec.json.format(msgspec.json.encode(starts))
    await trio.Path(run_dir / "process-starts.json").write_bytes(encoded)
    return msgspec.structs.replace(
        findings,
        secrets_sent_to_vast=await _secrets_sent(run_dir),
        agent_restarted=restarted_in_place(findings.agent_running, starts),
        agent_judged=sum(count is not None for count, _ in starts.values()),
    )


async def _process_starts(
    vast: httpx.AsyncClient, running: Mapping[str, str]
) -> dict[str, tuple[int | None, int | None]]:
    """UID → (starts of its process in its live instance's log, that instance) for the
    ``running`` pods; (0, None) for one without a live instance, (None, id) for one whose
    instance ended between the audit and the reading (not judged)."""
    ledger = msgspec.json.decode((await vast.get("/_sim/ledger")).content, type=list[LedgerRow])
    live = {
        owner.uid: row.id
        for row in ledger
        if row.destroyed_at is None and (owner := label_owner(row.label, NODE)) is not None
    }
    starts: dict[str, tuple[int | None, int | None]] = {}
    for uid in running:
        instance = live.get(uid)
        count = 0 if instance is None else await _log_count(vast, instance, AGENT_START_LINE)
        starts[uid] = (count, instance)
    return starts


async def _log_count(vast: httpx.AsyncClient, instance_id: int, text: str) -> int | None:
    """Lines of the instance's log holding ``text``, read as the node reads logs (Vast's
    ``request_logs``, then its result URL until uploaded), through rate limits; None if the
    instance is gone meanwhile (a fault drawn at its birth may end it after the audit), -1
    if its log could not be read."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = f"/api/v0/instances/request_logs/{instance_id}/"
    for _ in range(LOG_TRIES):
        asked = await vast.put(url, json={"filter": text}, headers=auth)
        if asked.status_code == 404:
            return None
        if asked.status_code != 200:  # rate limited
            await trio.sleep(0.2)
            continue
        for _ in range(LOG_TRIES):
            log = await vast.get(asked.json()["result_url"])
            if log.status_code == 200:
                return sum(text in line for line in log.text.splitlines())
            await trio.sleep(0.1)
    return -1


async def _secrets_sent(run_dir: Path) -> list[str]:
    """The create requests (``create request N``, N-th instance created) holding a Secret
    value the workload created."""
    raw = await trio.Path(run_dir / "create-requests.json").read_bytes()
    requests = msgspec.json.decode(raw, type=list[dict[str, object]])
    texts = {f"create request {i}": msgspec.json.encode(r).decode() for i, r in enumerate(requests)}
    return exposed(SECRET_VALUES, texts)


async def _settle(
    plan: Plan,
    node: Node,
    vast: httpx.AsyncClient,
    kube: httpx.AsyncClient,
    workload: Workload,
) -> tuple[Findings, float | None]:
    """Audit every second until what time can fix is fixed, or ``plan.settle`` has passed.

    Audits count only once the node (just restarted, perhaps) is ready, and the fix must
    hold for ``STABLE_AUDITS`` audits in a row: a pod status written by the previous
    incarnation may look fine until this one has swept the instances.
    Returns the last findings and the seconds it took (None when the bound was reached).
    """
    settling = trio.current_time()
    with trio.move_on_after(plan.settle):
        await node.wait_ready()
    stable = 0
    while True:
        node.check()
        findings = await _audit(vast, kube, workload)
        elapsed = trio.current_time() - settling
        stable = stable + 1 if findings.settled else 0
        if stable == STABLE_AUDITS:
            return findings, elapsed
        if elapsed > plan.settle:
            return findings, None
        _progress(elapsed, findings)
        await trio.sleep(SETTLE_POLL)


async def _kill_at_random(plan: Plan, node: Node, kill_times: list[float]) -> None:
    """SIGKILL the node once in each of ``plan.kills`` equal slices, at a seeded moment."""
    rng = random.Random(f"{plan.seed}:kills")
    began = trio.current_time()
    slice_ = plan.duration / max(plan.kills, 1)
    for i in range(plan.kills):
        await trio.sleep_until(began + slice_ * (i + rng.uniform(0.2, 0.9)))
        with trio.CancelScope(shield=True):
            kill_times.append(trio.current_time())
            await node.kill()
            await trio.sleep(rng.uniform(0.0, plan.max_downtime))
            node.start()


async def _outbid_at_random(
    plan: Plan, vast: httpx.AsyncClient, workload: Workload, outbids: _Outbids
) -> None:
    """Outbid a live interruptible instance now and then (``plan.outbids`` a second), through
    ``/_sim/faults`` as a user of the simulator would, and resume half of them a moment
    later; the others play out their pod's ``vast.ai/on-outbid`` policy."""
    if plan.outbids <= 0:
        return
    rng = random.Random(f"{plan.seed}:outbids")
    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(rng.expovariate(plan.outbids))
            bidding = await _live_interruptible(vast, workload)
            if not bidding:
                continue
            instance_id = rng.choice(bidding)
            if await _fault(vast, {"outbid": instance_id}):
                outbids.outbid += 1
                if rng.random() < 0.5:
                    later = rng.uniform(0.5, 5.0)
                    nursery.start_soon(_resume_after, vast, instance_id, later, outbids)


async def _resume_after(
    vast: httpx.AsyncClient, instance_id: int, delay: float, outbids: _Outbids
) -> None:
    await trio.sleep(delay)
    if await _fault(vast, {"resume": instance_id}):
        outbids.resumed += 1


async def _live_interruptible(vast: httpx.AsyncClient, workload: Workload) -> list[int]:
    """The ids of the live instances bought for the soak's interruptible pods."""
    ledger = msgspec.json.decode((await vast.get("/_sim/ledger")).content, type=list[LedgerRow])
    bidding = []
    for row in ledger:
        owner = label_owner(row.label, NODE)
        record = workload.records.get(owner.uid) if owner is not None else None
        if row.destroyed_at is None and record is not None and record.interruptible:
            bidding.append(row.id)
    return bidding


async def _fault(vast: httpx.AsyncClient, fault: dict[str, int]) -> bool:
    """Inject a per-instance fault; False when the instance is gone meanwhile (400)."""
    answer = await vast.post("/_sim/faults", content=msgspec.json.encode(fault))
    if answer.status_code == 400:
        return False
    answer.raise_for_status()
    return True


def _progress(elapsed: float, findings: Findings) -> None:
    """One line on stderr every few seconds of settling: what the node is still working on."""
    if int(elapsed) % PROGRESS_EVERY == 0:
        pending = {k: v for k, v in findings.invariants().items() if v}
        print(f"settling {elapsed:.0f}s: {pending}", file=sys.stderr, flush=True)


def _first(group: BaseExceptionGroup[ChildFailed]) -> ChildFailed:
    first = group.exceptions[0]
    return first if isinstance(first, ChildFailed) else _first(first)


async def _watch(node: Node) -> None:
    """End the soak at once if the node exits without being killed."""
    while True:
        node.check()
        await trio.sleep(0.2)


async def _audit(vast: httpx.AsyncClient, kube: httpx.AsyncClient, workload: Workload) -> Findings:
    ledger = msgspec.json.decode((await vast.get("/_sim/ledger")).content, type=list[LedgerRow])
    pods = msgspec.json.decode((await kube.get(PODS)).content, type=_PodList).items
    caps = {uid: record.price_max for uid, record in workload.records.items()}
    agent_pods = {uid for uid, record in workload.records.items() if record.agent}
    return audit(ledger, pods, caps, node=NODE, agent_pods=agent_pods)


async def _event_reasons(kube: httpx.AsyncClient) -> dict[str, int]:
    answer = await kube.get(f"/api/v1/namespaces/{NAMESPACE}/events")
    reasons: dict[str, int] = {}
    for event in msgspec.json.decode(answer.content, type=_EventList).items:
        reasons[event.reason] = reasons.get(event.reason, 0) + event.count
    return dict(sorted(reasons.items()))


async def _outputs(run_dir: Path) -> dict[str, str]:
    """Everything the node wrote or made others show: its logs, the Events, the pods."""
    folder = trio.Path(run_dir)
    names = ["events.json", "pods.json", *(p.name for p in sorted(await folder.glob("node-*.log")))]
    return {name: await (folder / name).read_text(errors="replace") for name in names}


async def _keep_evidence(run_dir: Path, vast: httpx.AsyncClient, kube: httpx.AsyncClient) -> None:
    """The raw records the audit read, as they were at the end, next to the logs."""
    sources = {
        "ledger.json": (vast, "/_sim/ledger"),
        "vast-stats.json": (vast, "/_sim/stats"),
        "create-requests.json": (vast, "/_sim/create-requests"),
        "pods.json": (kube, PODS),
        "events.json": (kube, f"/api/v1/namespaces/{NAMESPACE}/events"),
    }
    for name, (client, path) in sources.items():
        await trio.Path(run_dir / name).write_bytes((await client.get(path)).content)
