"""Typed views of the Kubernetes objects vk-trio reads: Pod (and what it references).

Only fields vk-trio reads are declared; msgspec ignores the rest, so a newer API server never
breaks decoding. Objects vk-trio *writes* (status patches, the Node, the Lease, Events) are built
as plain dicts next to the code that sends them, because a strategic-merge patch must contain
only the keys we own, which typed structs with defaults make easy to get wrong.

No I/O happens in this module.

Every struct here is ``gc=False``: decoded objects never refer back to what holds them, so
the cyclic collector need not walk them (a full collection's pause grows with every object
it walks, and a node keeps every pod of its own).
"""

from __future__ import annotations

import msgspec


class OwnerReference(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    """Counted by the API server for pods since 1.33 (spec changes); 0 before."""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    creation_timestamp: str | None = None
    owner_references: tuple[OwnerReference, ...] = ()


class KeySelector(msgspec.Struct, gc=False, kw_only=True):
    """``secretKeyRef`` / ``configMapKeyRef``."""

    name: str = ""
    key: str = ""
    optional: bool | None = None


class FieldSelector(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    field_path: str = ""


class EnvVarSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldSelector | None = None
    resource_field_ref: dict[str, str] | None = None


class EnvVar(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class NameRef(msgspec.Struct, gc=False, kw_only=True):
    name: str = ""
    optional: bool | None = None


class EnvFromSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    prefix: str = ""
    secret_ref: NameRef | None = None
    config_map_ref: NameRef | None = None


class ContainerPort(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    container_port: int
    name: str | None = None
    protocol: str = "TCP"
    host_port: int | None = None


class ResourceRequirements(msgspec.Struct, gc=False, kw_only=True):
    limits: dict[str, str] = msgspec.field(default_factory=dict)
    requests: dict[str, str] = msgspec.field(default_factory=dict)


class HTTPHeader(msgspec.Struct, gc=False, kw_only=True):
    name: str
    value: str = ""


class HTTPGetAction(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    port: int | str
    """A container port number, or the name of one in ``ports``."""
    path: str = "/"
    scheme: str = "HTTP"
    host: str | None = None
    http_headers: tuple[HTTPHeader, ...] = ()


class TCPSocketAction(msgspec.Struct, gc=False, kw_only=True):
    port: int | str
    host: str | None = None


class GRPCAction(msgspec.Struct, gc=False, kw_only=True):
    port: int
    service: str | None = None


class ExecAction(msgspec.Struct, gc=False, kw_only=True):
    command: tuple[str, ...] = ()


class SleepAction(msgspec.Struct, gc=False, kw_only=True):
    seconds: int = 0


class LifecycleHandler(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    """A ``postStart`` or ``preStop`` hook."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    sleep: SleepAction | None = None
    tcp_socket: TCPSocketAction | None = None
    """Deprecated, and a no-op in the kubelet."""


class Lifecycle(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


class Probe(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    """A container probe; the defaults are the API server's."""

    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    exec: ExecAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


class VolumeMount(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str
    mount_path: str = ""
    sub_path: str = ""
    sub_path_expr: str = ""
    read_only: bool = False


class Container(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    resources: ResourceRequirements = msgspec.field(default_factory=ResourceRequirements)
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    volume_mounts: tuple[VolumeMount, ...] = ()
    working_dir: str = ""
    lifecycle: Lifecycle | None = None
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: str = "File"


# -- volumes ----------------------------------------------------------------------------------
#
# The four sources an instance can be given (their contents travel in the agent's bundle) are
# typed; every other source is a ``dict`` only so that its type name can be reported when the
# pod is refused (``vk_trio.provider.volumes``). A dict, not ``msgspec.Raw``: a Raw is a view
# into the whole decoded message, and would keep a 1,000-pod list response alive.

Quantity = str | int | float
"""A resource quantity as the API sends it: a string (``"1Gi"``), rarely a bare number."""


class KeyToPath(msgspec.Struct, gc=False, kw_only=True):
    key: str
    path: str
    mode: int | None = None


class ConfigMapVolumeSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    """Also a projected volume's ``configMap`` (which has no ``defaultMode``)."""

    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool | None = None


class SecretVolumeSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    secret_name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool | None = None


class SecretProjection(msgspec.Struct, gc=False, kw_only=True):
    """A projected volume's ``secret``: ``name``, where a secret volume says ``secretName``."""

    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool | None = None


class ResourceFieldSelector(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    resource: str
    container_name: str = ""
    divisor: Quantity = ""


class DownwardAPIVolumeFile(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    path: str
    field_ref: FieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIVolumeSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    """Also a projected volume's ``downwardAPI`` (which has no ``defaultMode``)."""

    items: tuple[DownwardAPIVolumeFile, ...] = ()
    default_mode: int | None = None


class EmptyDirVolumeSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    medium: str = ""
    size_limit: Quantity | None = None


class VolumeProjection(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretProjection | None = None
    downward_api: DownwardAPIVolumeSource | None = msgspec.field(default=None, name="downwardAPI")
    service_account_token: dict[str, object] | None = None
    cluster_trust_bundle: dict[str, object] | None = None
    pod_certificate: dict[str, object] | None = None


class ProjectedVolumeSource(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    sources: tuple[VolumeProjection, ...] = ()
    default_mode: int | None = None


class Volume(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = msgspec.field(default=None, name="downwardAPI")
    projected: ProjectedVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None
    persistent_volume_claim: dict[str, object] | None = None
    host_path: dict[str, object] | None = None
    csi: dict[str, object] | None = None
    ephemeral: dict[str, object] | None = None
    image: dict[str, object] | None = None
    nfs: dict[str, object] | None = None
    iscsi: dict[str, object] | None = None
    git_repo: dict[str, object] | None = None
    aws_elastic_block_store: dict[str, object] | None = None
    azure_disk: dict[str, object] | None = None
    azure_file: dict[str, object] | None = None
    cephfs: dict[str, object] | None = None
    cinder: dict[str, object] | None = None
    fc: dict[str, object] | None = None
    flex_volume: dict[str, object] | None = None
    flocker: dict[str, object] | None = None
    gce_persistent_disk: dict[str, object] | None = None
    glusterfs: dict[str, object] | None = None
    photon_persistent_disk: dict[str, object] | None = None
    portworx_volume: dict[str, object] | None = None
    quobyte: dict[str, object] | None = None
    rbd: dict[str, object] | None = None
    scale_io: dict[str, object] | None = msgspec.field(default=None, name="scaleIO")
    storageos: dict[str, object] | None = None
    vsphere_volume: dict[str, object] | None = None

    @property
    def source_type(self) -> str:
        """The API's name of the volume's source (``persistentVolumeClaim``); "" if none is
        one vk-trio knows (a source newer than these models)."""
        for field, wire in _VOLUME_FIELDS:
            if getattr(self, field) is not None:
                return wire
        return ""


_VOLUME_FIELDS = tuple(
    (field.name, field.encode_name) for field in msgspec.structs.fields(Volume)[1:]
)
"""(attribute, API name) of every source of :class:`Volume`, in declaration order."""


class Toleration(msgspec.Struct, gc=False, kw_only=True):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None


class PodSpec(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    ephemeral_containers: tuple[Container, ...] = ()
    """Added by ``kubectl debug``; the fields vk-trio reads are a container's."""
    node_name: str = ""
    restart_policy: str = "Always"
    active_deadline_seconds: int | None = None
    service_account_name: str = ""
    image_pull_secrets: tuple[NameRef, ...] = ()
    termination_grace_period_seconds: int | None = None
    tolerations: tuple[Toleration, ...] = ()
    volumes: tuple[Volume, ...] = ()


class ContainerStateWaiting(msgspec.Struct, gc=False, kw_only=True):
    reason: str = ""
    message: str = ""


class ContainerStateRunning(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    started_at: str | None = None


class ContainerStateTerminated(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None


class ContainerState(msgspec.Struct, gc=False, kw_only=True):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    name: str
    ready: bool = False
    restart_count: int = 0
    state: ContainerState = msgspec.field(default_factory=ContainerState)
    image: str = ""


class PodCondition(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class PodStatus(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    pod_ip: str | None = msgspec.field(default=None, name="podIP")
    host_ip: str | None = msgspec.field(default=None, name="hostIP")
    start_time: str | None = None
    conditions: tuple[PodCondition, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()


class Pod(msgspec.Struct, gc=False, kw_only=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)

    @property
    def key(self) -> str:
        """``namespace/name``: how people and logs refer to the pod."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def uid(self) -> str:
        return self.metadata.uid

    @property
    def is_terminal(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    @property
    def is_deleting(self) -> bool:
        return self.metadata.deletion_timestamp is not None


class Secret(msgspec.Struct, gc=False, kw_only=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    data: dict[str, str] = msgspec.field(default_factory=dict)
    """Values are base64, as the API sends them."""
    type: str = ""


class ConfigMap(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    data: dict[str, str] = msgspec.field(default_factory=dict)
    binary_data: dict[str, bytes] = msgspec.field(default_factory=dict)
    """Base64 on the wire; msgspec decodes it to bytes."""


class ServicePort(msgspec.Struct, gc=False, kw_only=True, rename="camel"):
    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: int | str | None = None
    """A container port number or name; the API server defaults it to ``port``."""


class ServiceSpec(msgspec.Struct, gc=False, kw_only=True):
    selector: dict[str, str] | None = None
    ports: tuple[ServicePort, ...] = ()


class Service(msgspec.Struct, gc=False, kw_only=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def uid(self) -> str:
        return self.metadata.uid
