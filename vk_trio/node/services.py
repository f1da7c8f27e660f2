"""What every pod task of one node shares: settings, clients, the provider, the probe bound,
the status writer. Built once by the app; the dispatcher hands it to each pod's supervisor."""

from __future__ import annotations

from dataclasses import dataclass, field

from vk_trio.config import Settings
from vk_trio.kube.api import KubeClient
from vk_trio.kube.events import EventRecorder
from vk_trio.node.probes import Prober
from vk_trio.node.provider import Provider
from vk_trio.node.status_writer import StatusWriter

__all__ = ["NodeServices"]


@dataclass
class NodeServices:
    """What every pod task of one node shares."""

    settings: Settings
    kube: KubeClient
    events: EventRecorder
    provider: Provider
    prober: Prober = field(default_factory=Prober)
    """Bounds the probe attempts of every pod of the node."""
    statuses: StatusWriter = field(default_factory=StatusWriter)
    """Writes every pod's status; the dispatcher runs it."""
