"""What a pod looks like to Kubernetes, built from what vk-trio knows about it. Pure functions.

A supervisor keeps one ``PodView`` per pod and turns it into the ``status`` of a
strategic-merge patch with ``status_patch()``. Only the keys vk-trio owns are sent:
conditions other controllers add are left alone, because strategic merge merges
``conditions`` by ``type``. ``PodScheduled=True`` is written on every status, as the kubelet
writes it among the conditions it owns: a pod created with ``spec.nodeName`` has no binding
to set it, and its ``observedGeneration`` follows the pod's like the others'.

``kubectl get pods`` shows the chosen container's waiting reason (``SearchingOffers``,
``NoMatchingOffers``, ``Provisioning``…) in its STATUS column, so every state a user should
see is a waiting reason with a message that says what to do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vk_trio.kube.models import Container, Pod, ResourceRequirements

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]

PROBES_IGNORED = "vast.ai/ProbesIgnored"
"""A pod condition of vk-trio's own: some probes of the container cannot run on the node
(``exec``); its message says which. Not a readiness gate: it changes nothing, it tells."""


def now_rfc3339() -> str:
    """Wall-clock time as Kubernetes ``metav1.Time`` ("2026-01-02T03:04:05Z")."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: str


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None


ContainerState = Waiting | Running | Terminated


@dataclass(frozen=True)
class ProcessState:
    """One container's process as a runtime inside the instance reports it (the vk-trio
    agent): its state, its restarts in place, and its own (exec) probes' verdicts."""

    name: str
    state: ContainerState
    last_state: Terminated | None = None
    restart_count: int = 0
    """Restarts in place, on this instance."""
    ready: bool | None = None
    """The runtime's readiness probe; None when it runs none."""
    started: bool | None = None
    """The runtime's startup probe has passed; None when it runs none."""


@dataclass(frozen=True)
class ProcessEvent:
    """Something a runtime inside the instance saw happen to one of the pod's containers,
    for the pod's Events as the kubelet records them (``Created``, ``Started``,
    ``Killing``, ``BackOff``, ``FailedPostStartHook``...). ``seq`` numbers them."""

    seq: int
    container: str
    init: bool
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Disruption:
    """Why the pod's instance was taken away (``Interrupted``), shown as the
    ``DisruptionTarget`` condition: True from ``since``; False once ``ended`` (it runs again,
    on the same instance or a new one), as Kubernetes' disruption controller turns a stale
    one False rather than removing it."""

    reason: str
    message: str
    since: str
    ended: str | None = None

    def condition(self) -> dict[str, Any]:
        if self.ended is None:
            return {
                "type": DISRUPTION_TARGET,
                "status": "True",
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": self.since,
            }
        return {
            "type": DISRUPTION_TARGET,
            "status": "False",
            "reason": "InstanceRunning",
            "message": f"running again since {self.ended} ({self.reason} from {self.since})",
            "lastTransitionTime": self.ended,
        }


DISRUPTION_TARGET = "DisruptionTarget"
"""The pod condition Kubernetes sets on a pod about to be disrupted (preempted, evicted,
tainted out); Jobs' ``podFailurePolicy`` matches it to leave such failures uncounted."""

EPHEMERAL_UNSUPPORTED = Terminated(
    128,
    "NotSupportedOnVirtualNode",
    "kubectl debug is not supported on Vast.ai instances (yet): ephemeral containers do not run",
)
"""The state of every ephemeral container. Terminated, because ``kubectl debug`` waits for
its container to be running or terminated (a waiting one would keep it waiting forever);
128 is the kubelet's exit code for a container that could not start."""


@dataclass(frozen=True)
class PodView:
    """Everything vk-trio reports about one pod; immutable, replaced on every change."""

    phase: Phase = "Pending"
    state: ContainerState = Waiting("SearchingOffers", "looking for a matching GPU offer")
    ready: bool = False
    restart_count: int = 0
    last_state: Terminated | None = None
    address: str | None = None
    start_time: str | None = None
    message: str | None = None
    """Pod-level message (shown by ``kubectl describe``), e.g. why the pod failed."""
    reason: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Containers that do not run on the instance → the reason shown for each."""
    container_id: str | None = None
    """The instance that runs (or last ran) the container, as ``<scheme>://<id>``."""
    started: bool = True
    """False while the container runs but its startup probe has not succeeded yet."""
    ignored_probes: str | None = None
    """Why some of the container's probes are not run (``exec``), shown as a condition."""
    disruption: Disruption | None = None
    """The instance was taken away (or was, and runs again): ``DisruptionTarget``."""
    initialized: bool = True
    """False until every init container has succeeded (``Initialized``)."""
    init_states: tuple[ProcessState, ...] = ()
    """The init containers as the runtime reported them (none reported yet: waiting)."""
    runtime_ready: bool | None = None
    """The runtime's own readiness verdict (exec probes), ANDed with ``ready``."""

    def waiting(self, reason: str, message: str) -> PodView:
        """The container waits; the phase stays (a Running pod whose container restarts is
        still Running, as with a kubelet: phases never go back)."""
        return replace(self, state=Waiting(reason, message), ready=False)


def _condition(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
    """A condition for a strategic-merge patch: a True one carries no reason nor message.

    Conditions merge by ``type`` key by key, so a True condition that merely left out its
    reason would keep the one of its False days (``Ready=True`` with ``ContainersNotReady``);
    the nulls delete them, as the kubelet's ``GeneratePodReadyCondition`` leaves them empty.
    """
    condition: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if ok:
        condition["reason"] = condition["message"] = None
    elif reason:
        condition["reason"] = reason
    return condition


def _state(state: ContainerState) -> dict[str, Any]:
    """A container state for a strategic-merge patch: the two other kinds set to null.

    Strategic merge merges the ``state`` map key by key, so without the nulls a container
    that went from waiting to running would keep its old ``waiting`` next to ``running``
    (and kubectl would still print the waiting reason).
    """
    cleared: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
    match state:
        case Waiting(reason, message):
            return {**cleared, "waiting": {"reason": reason, "message": message}}
        case Running(started_at):
            return {**cleared, "running": {"startedAt": started_at}}
        case Terminated(exit_code, reason, message, started_at, finished_at):
            terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
            if message:
                terminated["message"] = message
            if started_at:
                terminated["startedAt"] = started_at
            terminated["finishedAt"] = finished_at or now_rfc3339()
            return {**cleared, "terminated": terminated}
    raise AssertionError(state)


def status_patch(pod: Pod, view: PodView, *, chosen: str) -> dict[str, Any]:
    """The ``status`` object of a strategic-merge patch for ``pod`` in ``view``'s state.

    ``chosen`` names the container that runs on the instance; every other container is
    reported waiting with the reason recorded in ``view.skipped``.
    """
    statuses = []
    for container in pod.spec.containers:
        entry: dict[str, Any] = {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
        }
        if container.name == chosen:
            _show_chosen(entry, container, view)
        else:
            reason = view.skipped.get(container.name, "one Vast instance runs one container")
            entry["state"] = _state(Waiting("NotScheduledOnInstance", reason))
        statuses.append(entry)
    # Ready needs every container ready; a skipped container never is, by design of the
    # "one instance, one image" rule. Report it honestly rather than pretend.
    all_ready = view.ready and view.runtime_ready is not False and not view.skipped
    conditions = [
        _condition("Initialized", view.initialized, "ContainersNotInitialized"),
        _condition("ContainersReady", all_ready, "ContainersNotReady"),
        _condition("Ready", all_ready, "ContainersNotReady"),
    ]
    if view.ignored_probes:
        conditions.append(
            {
                "type": PROBES_IGNORED,
                "status": "True",
                "reason": "ProbeNotSupported",
                "message": view.ignored_probes,
            }
        )
    if view.disruption is not None:
        conditions.append(view.disruption.condition())
    conditions.insert(0, _condition("PodScheduled", True))
    status: dict[str, Any] = {
        "phase": view.phase,
        "conditions": conditions,
        "containerStatuses": statuses,
        "reason": view.reason,
        "message": view.message,
    }
    _observed(status, pod.metadata.generation)
    if pod.spec.init_containers:
        status["initContainerStatuses"] = _init_statuses(pod, view)
    if pod.spec.ephemeral_containers:
        status["ephemeralContainerStatuses"] = [
            {
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": _state(EPHEMERAL_UNSUPPORTED),
            }
            for container in pod.spec.ephemeral_containers
        ]
    if view.start_time:
        status["startTime"] = view.start_time
    # No address (a new instance is being bought): null clears the old one, as above.
    address = view.address
    status["podIP"] = status["hostIP"] = address
    status["podIPs"] = status["hostIPs"] = [{"ip": address}] if address else None
    return status


def _show_chosen(entry: dict[str, Any], container: Container, view: PodView) -> None:
    """The status of the container the instance runs, from ``view``."""
    if view.container_id:
        entry["containerID"] = view.container_id
        entry["imageID"] = container.image  # the reference the instance was made from
    entry["ready"] = view.ready and view.runtime_ready is not False
    entry["started"] = isinstance(view.state, Running) and view.started
    entry["restartCount"] = view.restart_count
    entry["state"] = _state(view.state)
    if view.last_state is not None:
        entry["lastState"] = _state(view.last_state)
    resources = _resources(container.resources)
    if resources:
        entry["resources"] = resources


def _resources(resources: ResourceRequirements) -> dict[str, Any]:
    """``containerStatuses[].resources`` (KEP-1287): what the container was given, which on
    a rented instance is what it asked for (the instance has at least that, and nothing
    resizes it in place)."""
    shown: dict[str, Any] = {}
    if resources.requests:
        shown["requests"] = dict(resources.requests)
    if resources.limits:
        shown["limits"] = dict(resources.limits)
    return shown


def _init_statuses(pod: Pod, view: PodView) -> list[dict[str, Any]]:
    """The init containers, as reported, or waiting (``PodInitializing``) until they are."""
    reported = {state.name: state for state in view.init_states}
    statuses = []
    for container in pod.spec.init_containers:
        process = reported.get(container.name)
        state = process.state if process else Waiting("PodInitializing")
        entry: dict[str, Any] = {
            "name": container.name,
            "image": container.image,
            "imageID": container.image if process else "",
            "ready": isinstance(state, Terminated) and state.exit_code == 0,
            "started": isinstance(state, Running),
            "restartCount": process.restart_count if process else 0,
            "state": _state(state),
        }
        if process is not None and process.last_state is not None:
            entry["lastState"] = _state(process.last_state)
        if view.container_id and process is not None:
            entry["containerID"] = view.container_id
        statuses.append(entry)
    return statuses


def _observed(status: dict[str, Any], generation: int) -> None:
    """``observedGeneration`` on the status and on each condition the node writes, as
    kubelets since 1.34 write them (KEP-5067): the ``metadata.generation`` of the pod the
    status was made from. None before 1.33 (no generation), as there is nothing to say."""
    if not generation:
        return
    status["observedGeneration"] = generation
    for condition in status["conditions"]:
        condition["observedGeneration"] = generation


def without_times(value: Any) -> Any:
    """``value`` minus timestamps, to decide whether a status really changed."""
    if isinstance(value, dict):
        return {
            k: without_times(v)
            for k, v in value.items()
            if k not in ("lastTransitionTime", "lastProbeTime", "finishedAt")
        }
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value
