"""``PodLookup``: a kubelet API request names the pod and container; the node answers for a
container the instance does not run, and only the placed one reaches the provider."""

from __future__ import annotations

import msgspec
import pytest

from vk_trio.kube.models import Pod
from vk_trio.node.handle import PodHandle
from vk_trio.node.lookup import PodLookup
from vk_trio.node.provider import NotFound, NotReady, Placement


def two_container_pod() -> PodHandle:
    pod = msgspec.convert(
        {
            "metadata": {"name": "pair", "namespace": "default", "uid": "u1"},
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "busybox"},
                    {"name": "model", "image": "vllm"},
                ]
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "model",
                        "state": {"waiting": {"reason": "SearchingOffers", "message": "3 left"}},
                    }
                ]
            },
        },
        Pod,
    )
    return PodHandle(pod)


def test_only_the_placed_container_is_running() -> None:
    handle = two_container_pod()
    lookup = PodLookup({handle.uid: handle}, node_name="n")
    handle.placement = Placement("model", {"sidecar": 'the instance runs "model"'})
    assert lookup.running("default", "pair", "model") is handle.pod
    assert lookup.placed() == [(handle.pod, "model")]
    with pytest.raises(NotReady, match='"sidecar" in pod "pair" is waiting to start: the inst'):
        lookup.running("default", "pair", "sidecar")


def test_before_placement_the_pods_waiting_reason_is_given() -> None:
    handle = two_container_pod()
    lookup = PodLookup({handle.uid: handle}, node_name="n")
    assert lookup.placed() == []
    with pytest.raises(NotReady, match="waiting to start: SearchingOffers: 3 left"):
        lookup.running("default", "pair", "model")
    with pytest.raises(NotReady, match="waiting to start: ContainerCreating"):
        lookup.running("default", "pair", "sidecar")


@pytest.mark.parametrize(
    ("namespace", "name", "container", "message"),
    [
        ("default", "other", "model", "pod default/other is not on node n"),
        ("team", "pair", "model", "pod team/pair is not on node n"),
        ("default", "pair", "nope", "container nope is not valid for pod pair"),
    ],
    ids=["pod", "namespace", "container"],
)
def test_unknown_pods_and_containers_are_not_found(
    namespace: str, name: str, container: str, message: str
) -> None:
    handle = two_container_pod()
    handle.placement = Placement("model", {})
    lookup = PodLookup({handle.uid: handle}, node_name="n")
    with pytest.raises(NotFound, match=message):
        lookup.running(namespace, name, container)
