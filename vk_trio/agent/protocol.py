"""What the node and the agent say to each other over the link, as typed messages.

One connection carries one request: the node opens a link (``link.py``), sends one
:data:`Request` frame, and reads the answers until the agent closes its side. A short
question (``Start``, ``GetUsage``) has one answer; a stream (``Watch``, ``Logs``) has many.
One connection per request keeps the agent simple (no multiplexing, no shared state per
connection) and costs one TLS handshake, which on a connection the node holds for the pod's
life (``Watch``) is paid once.

Three requests open a stream both ways (``kubectl exec``, ``attach`` and ``port-forward``):
``Exec``, ``Attach`` and ``PortForward`` are answered ``Accepted`` or ``Failed`` first; after
``Accepted`` both ends send :data:`StreamFrame` messages on the same connection until one
closes it: the node its input (``Input``, ``InputEnd``, ``Resize``; ``Chunk``/``End`` for a
forwarded port), the agent the process's ``Output`` and its ``Exit`` (``Chunk``/``End``).
Each side reads one frame at a time and sends the next only when the connection takes it,
so neither holds more than a frame of the other's data.

Times are RFC 3339 strings in UTC, as Kubernetes shows them, so that the node copies them
into the pod's status unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "AGENT_PORT",
    "EVENTS_KEPT",
    "Accepted",
    "Answer",
    "Attach",
    "Bundle",
    "Chunk",
    "ContainerState",
    "End",
    "Exec",
    "ExecProbe",
    "Exit",
    "Failed",
    "GetUsage",
    "Hook",
    "HttpHook",
    "Input",
    "InputEnd",
    "Logs",
    "Mount",
    "Output",
    "PodEvent",
    "PodState",
    "PortForward",
    "ProcessSpec",
    "Request",
    "Resize",
    "Restart",
    "Start",
    "Stop",
    "StreamFrame",
    "Terminated",
    "UpdateVolume",
    "UsageReport",
    "Volume",
    "VolumeFile",
    "Watch",
]

AGENT_PORT = 10250
"""The container port the agent listens on (Vast publishes it like the pod's own ports).
The kubelet's port: the agent is the kubelet's runtime half, and pods rarely use it."""


# -- the bundle: everything the pod's process needs, sent once the instance runs -------------


class VolumeFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a configMap/secret/downwardAPI/projected volume, relative to its root."""

    path: str
    data: bytes
    mode: int = 0o644


class Volume(msgspec.Struct, frozen=True, kw_only=True):
    """A volume the agent makes: ``files`` for the kubelet's atomic-writer volumes (written
    under ``..data`` and swapped whole on update), None for an ``emptyDir``."""

    name: str
    files: list[VolumeFile] | None = None
    medium: str = ""
    """``"Memory"`` puts an emptyDir on tmpfs."""
    size_limit: int | None = None
    """Bytes; an emptyDir that grows past it gets the pod evicted, as the kubelet does."""


class Mount(msgspec.Struct, frozen=True, kw_only=True):
    """A volume at a path in the container (``volumeMounts``)."""

    volume: str
    path: str
    sub_path: str = ""
    read_only: bool = False


class ExecProbe(msgspec.Struct, frozen=True, kw_only=True):
    """A probe the agent runs inside the container (``exec``), with the kubelet's fields."""

    kind: Literal["liveness", "readiness", "startup"]
    command: list[str]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


class HttpHook(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle hook's ``httpGet``, its port already a number (a named port is resolved
    by the node, which has the container's ``ports``)."""

    port: int
    host: str = ""
    """Empty: the container's own address, which inside the instance is 127.0.0.1."""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    path: str = "/"
    headers: list[tuple[str, str]] = []


class Hook(msgspec.Struct, frozen=True, kw_only=True):
    """A ``postStart`` or ``preStop`` handler: one of ``exec``, ``http``, ``sleep``."""

    exec: list[str] | None = None
    http: HttpHook | None = None
    sleep: float | None = None


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One container's process: ``argv`` already resolved as the kubelet would (the pod's
    ``command``/``args`` over the image's ENTRYPOINT/CMD, ``$(VAR)`` expanded)."""

    name: str
    argv: list[str]
    env: list[tuple[str, str]] = []
    working_dir: str = ""
    """Empty: the image's, else ``/``."""
    user: str = ""
    """``uid``, ``uid:gid`` or a name from the image's /etc/passwd; empty keeps the agent's."""
    mounts: list[Mount] = []
    probes: list[ExecProbe] = []
    stdin: bool = False
    """The process gets a pipe for stdin that ``kubectl attach -i`` writes to (else
    /dev/null, the kubelet's default)."""
    stdin_once: bool = False
    """The pipe is closed when the first attached client closes its stdin."""
    tty: bool = False
    """Kept for the record: the agent does not give the main process a terminal (yet)."""
    post_start: Hook | None = None
    """Run right after the process starts; the container is running only once it returns,
    and its failure kills the run (``FailedPostStartHook``)."""
    pre_stop: Hook | None = None
    """Run before the stop signal, within the grace period (which counts its time)."""
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] = "File"


class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    """The pod as the agent runs it."""

    pod_uid: str
    pod_name: str = ""
    pod_namespace: str = ""
    """For the kubelet's messages, which name the pod as ``name_namespace(uid)``."""
    volumes: list[Volume] = []
    init_containers: list[ProcessSpec] = []
    container: ProcessSpec
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    termination_grace: float = 30.0
    secret_values: list[str] = []
    """The pod's Secret values (in its env and volumes): the agent never prints them in its
    own log lines, which are the instance's log that Vast keeps."""


# -- requests (node → agent) -----------------------------------------------------------------


class Start(msgspec.Struct, frozen=True, kw_only=True, tag="start"):
    """Run this bundle. Idempotent: a bundle for the pod the agent already runs is not
    started again (a restarted node reconnects without restarting anything)."""

    bundle: Bundle


class Watch(msgspec.Struct, frozen=True, kw_only=True, tag="watch"):
    """Send a ``PodState`` now, then on every change (and every ``heartbeat`` seconds, so a
    silent connection is a dead one)."""

    heartbeat: float = 10.0


class UpdateVolume(msgspec.Struct, frozen=True, kw_only=True, tag="update_volume"):
    """A ConfigMap or Secret changed: swap the volume's files atomically (``..data``)."""

    volume: Volume


class Logs(msgspec.Struct, frozen=True, kw_only=True, tag="logs"):
    """A container's output, under the kubelet's log options."""

    container: str
    previous: bool = False
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_time: str | None = None
    timestamps: bool = False


class GetUsage(msgspec.Struct, frozen=True, kw_only=True, tag="usage"):
    """What the container uses now (its cgroup, the GPUs)."""


class Restart(msgspec.Struct, frozen=True, kw_only=True, tag="restart"):
    """Kill the container's process and start it again under the restart policy (a liveness
    probe the node runs failed); ``message`` ends up in the restart's reason."""

    message: str


class Exec(msgspec.Struct, frozen=True, kw_only=True, tag="exec"):
    """Run ``command`` in the container's world (its env, directory and user), with the
    streams asked for; a ``tty`` one runs on a terminal of ``width`` x ``height``."""

    container: str
    command: list[str]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    width: int | None = None
    height: int | None = None


class Attach(msgspec.Struct, frozen=True, kw_only=True, tag="attach"):
    """Join the container's running process: its output from now on, and its stdin when
    its spec has ``stdin``."""

    container: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


class PortForward(msgspec.Struct, frozen=True, kw_only=True, tag="port_forward"):
    """Connect to ``port`` on the instance's loopback and relay one TCP connection."""

    port: int


class Stop(msgspec.Struct, frozen=True, kw_only=True, tag="stop"):
    """The pod is being deleted: run each running container's ``preStop`` hook, then stop
    its process (SIGTERM, SIGKILL once ``grace`` seconds have passed since the request, the
    hook's time counted), and answer ``Accepted`` once every process has ended. Nothing is
    restarted afterwards. The node destroys the instance after the answer (or without one,
    once its own deadline passed)."""

    grace: float


Request = (
    Start | Watch | UpdateVolume | Logs | GetUsage | Restart | Exec | Attach | PortForward | Stop
)


# -- answers (agent → node) ------------------------------------------------------------------


class Accepted(msgspec.Struct, frozen=True, kw_only=True, tag="accepted"):
    """The request was done (``Start``: ``started`` False when it already ran)."""

    started: bool = True


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag="failed"):
    """The request cannot be done; ``message`` is one line for the pod's status."""

    reason: str
    message: str


class Terminated(msgspec.Struct, frozen=True, kw_only=True):
    """A process that ended, as ``containerStatuses[].state.terminated`` shows it."""

    exit_code: int
    reason: str
    """``Completed`` (0), ``Error``, ``OOMKilled``, ``StartError`` (never ran)."""
    started_at: str | None = None
    finished_at: str
    message: str = ""
    signal: int | None = None


class ContainerState(msgspec.Struct, frozen=True, kw_only=True):
    """One container as the agent runs it."""

    name: str
    state: Literal["waiting", "running", "terminated"]
    reason: str = ""
    """Waiting: why (``PodInitializing``, ``CrashLoopBackOff``...)."""
    message: str = ""
    started_at: str | None = None
    """Running: since when."""
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool | None = None
    """The agent's exec readiness probe; None when it runs none (the node decides)."""
    started: bool | None = None
    """The agent's exec startup probe has passed; None when it runs none."""


class PodEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something the kubelet would record as an Event about one of the pod's containers
    (``Created``, ``Started``, ``Killing``, ``BackOff``, ``FailedPostStartHook``...).
    ``seq`` grows by one with each, so the node records each once."""

    seq: int
    container: str
    init: bool = False
    type: Literal["Normal", "Warning"] = "Normal"
    reason: str
    message: str


class PodState(msgspec.Struct, frozen=True, kw_only=True, tag="state"):
    """Everything the node shows of the pod's containers."""

    init_containers: list[ContainerState] = []
    container: ContainerState
    initialized: bool = False
    finished: bool = False
    """No process will run again (restart policy); the pod's phase is final."""
    reason: str = ""
    """Why the pod ended, when the agent ended it (``Evicted``), as the pod's ``reason``."""
    message: str = ""
    """One line for the pod's ``message`` (which ``emptyDir`` outgrew its limit)."""
    events: list[PodEvent] = []
    """The most recent events (at most :data:`EVENTS_KEPT`), oldest first."""


EVENTS_KEPT = 50
"""Events a ``PodState`` carries: a node that lost the link for a while still sees what
happened meanwhile, and a report stays small."""


class Chunk(msgspec.Struct, frozen=True, kw_only=True, tag="chunk"):
    """A piece of a stream (whole lines for logs)."""

    data: bytes


class End(msgspec.Struct, frozen=True, kw_only=True, tag="end"):
    """The stream is complete."""


class UsageReport(msgspec.Struct, frozen=True, kw_only=True, tag="usage_report"):
    """The container's cgroup and the GPUs, as the kubelet's Summary needs them."""

    cpu_usage_nano_seconds: int | None = None
    """Cumulative CPU time; the node turns two readings into nano-cores."""
    memory_bytes: int | None = None
    disk_used_bytes: int | None = None
    disk_capacity_bytes: int | None = None
    gpu_utilisation: float | None = None
    gpu_memory_bytes: int | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_name: str | None = None


Answer = Accepted | Failed | PodState | Chunk | End | UsageReport


# -- streams (both ways, after Exec, Attach, PortForward is Accepted) ------------------------


class Input(msgspec.Struct, frozen=True, kw_only=True, tag="input"):
    """Node → agent: bytes for the process's stdin."""

    data: bytes


class InputEnd(msgspec.Struct, frozen=True, kw_only=True, tag="input_end"):
    """Node → agent: the client closed stdin (a terminal gets EOT, ^D)."""


class Resize(msgspec.Struct, frozen=True, kw_only=True, tag="resize"):
    """Node → agent: the client's terminal has a new size (columns, rows)."""

    width: int
    height: int


class Output(msgspec.Struct, frozen=True, kw_only=True, tag="output"):
    """Agent → node: a piece of the process's output (at most 32 KiB); a terminal's is all
    ``stdout``, as the kubelet sends it."""

    stream: Literal["stdout", "stderr"]
    data: bytes


class Exit(msgspec.Struct, frozen=True, kw_only=True, tag="exit"):
    """Agent → node: the process ended, and it was the last frame. ``code`` as the kubelet
    reports it (128 + signal for a killed process, 126/127 for a command that cannot run,
    with ``message`` saying why)."""

    code: int
    message: str = ""


StreamFrame = Accepted | Failed | Input | InputEnd | Resize | Output | Exit | Chunk | End
"""What follows a stream request on its connection, both ways (one decoder for both ends:
the first answer, ``Accepted`` or ``Failed``, is one of them). A forwarded port's bytes are
``Chunk`` and its half-close ``End``, in either direction."""
