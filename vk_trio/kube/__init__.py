"""The Kubernetes side of the node: one API client and the verbs a kubelet needs.

Layering (nothing here imports ``vk_trio.vast`` or ``vk_trio.node`` or ``vk_trio.provider``)::

    config   where the cluster is, how to authenticate (kubeconfig / in-cluster)
    api      KubeClient.request / stream_lines: the one place httpx errors become KubeErrors,
             and the one retry policy
    errors   KubeError and its subclasses (Temporary/PermanentError underneath)
    watch    watch_pods: list + watch + relist, as PodEvents
    node     Node registration and status; lease: the heartbeat
    events   EventRecorder (never raises); pods: status/annotation patches, delete, gets
    services watch_services, and the EndpointSlices vk-trio manages
    models   typed views (no I/O)

Long-running pieces (``run_lease``, ``run_node_status``) take ``task_status`` and are started
by the caller's nursery; nothing here starts a background task of its own.
"""

from vk_trio.kube.api import KubeClient as KubeClient
from vk_trio.kube.config import ClusterConfig as ClusterConfig
from vk_trio.kube.config import ConfigError as ConfigError
from vk_trio.kube.config import load_config as load_config
from vk_trio.kube.errors import KubeConflict as KubeConflict
from vk_trio.kube.errors import KubeError as KubeError
from vk_trio.kube.errors import KubeForbidden as KubeForbidden
from vk_trio.kube.errors import KubeGone as KubeGone
from vk_trio.kube.errors import KubeInvalid as KubeInvalid
from vk_trio.kube.errors import KubeNotFound as KubeNotFound
from vk_trio.kube.errors import KubeServerError as KubeServerError
from vk_trio.kube.errors import KubeTooManyRequests as KubeTooManyRequests
from vk_trio.kube.errors import KubeUnavailable as KubeUnavailable
from vk_trio.kube.events import EventRecorder as EventRecorder
from vk_trio.kube.lease import run_lease as run_lease
from vk_trio.kube.node import NodeConfig as NodeConfig
from vk_trio.kube.node import NodeStatusReporter as NodeStatusReporter
from vk_trio.kube.node import Taint as Taint
from vk_trio.kube.node import run_node_status as run_node_status
from vk_trio.kube.pods import delete_pod as delete_pod
from vk_trio.kube.pods import get_config_map as get_config_map
from vk_trio.kube.pods import get_pod as get_pod
from vk_trio.kube.pods import get_secret as get_secret
from vk_trio.kube.pods import patch_pod_annotations as patch_pod_annotations
from vk_trio.kube.pods import patch_pod_status as patch_pod_status
from vk_trio.kube.watch import PodEvent as PodEvent
from vk_trio.kube.watch import watch_pods as watch_pods

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "EventRecorder",
    "KubeClient",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeGone",
    "KubeInvalid",
    "KubeNotFound",
    "KubeServerError",
    "KubeTooManyRequests",
    "KubeUnavailable",
    "NodeConfig",
    "NodeStatusReporter",
    "PodEvent",
    "Taint",
    "delete_pod",
    "get_config_map",
    "get_pod",
    "get_secret",
    "load_config",
    "patch_pod_annotations",
    "patch_pod_status",
    "run_lease",
    "run_node_status",
    "watch_pods",
]
