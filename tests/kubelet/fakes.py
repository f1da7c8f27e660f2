"""The node half the kubelet API reads, faked: real pod handles over the node tests'
``FakeProvider``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from tests.node.fakes import FakeOutput, FakeProvider
from vk_trio.kube.models import Pod
from vk_trio.node.handle import PodHandle
from vk_trio.node.lookup import PodLookup
from vk_trio.node.provider import Placement

NODE = "vk-kubelet-test"


@dataclass
class FakeNode:
    """The node half the kubelet API reads: real ``PodHandle``s, each placed on its pod's
    one container, over the fake provider's outputs."""

    provider: FakeProvider = field(default_factory=FakeProvider)
    handles: dict[str, PodHandle] = field(default_factory=dict)

    def add_pod(self, pod: dict[str, Any]) -> FakeOutput:
        decoded = msgspec.convert(pod, Pod)
        handle = PodHandle(decoded)
        handle.placement = Placement(decoded.spec.containers[0].name, {})
        self.handles[decoded.uid] = handle
        output = self.provider.outputs[decoded.metadata.name] = FakeOutput()
        return output

    @property
    def lookup(self) -> PodLookup:
        return PodLookup(self.handles, node_name=NODE)
