"""Where the node's instances get the agent: ``--agent-url`` first, else the layer of the
node's own image (read from its pod, resolved with the registry simulator), else none, with
the reason pods are refused with."""

from __future__ import annotations

import gzip
from typing import Any, cast

import msgspec
import pytest

from vk_trio.agent.bootstrap import (
    AGENT_LAYER_ENV,
    AGENT_LAYER_SHA256_ENV,
    AGENT_TOKEN_URL_ENV,
    AGENT_URL_ENV,
)
from vk_trio.config import Settings
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeNotFound
from vk_trio.kube.models import Pod
from vk_trio.node.provider import InvalidPod
from vk_trio.provider import agent_source
from vk_trio.provider.agent_source import find_agent, pod_image
from vk_trio.provider.runtime import agent_placement

LAYER = gzip.compress(b"a tar would be here")


class FakeKube:
    """The one request discovery makes: GET of the node's own pod."""

    def __init__(self, pod: dict[str, Any] | None) -> None:
        self.pod = pod
        self.paths: list[str] = []

    async def request(self, method: str, path: str, **_: Any) -> Any:
        self.paths.append(path)
        if self.pod is None:
            raise KubeNotFound(f"{path} not found")
        return self.pod


def settings(**overrides: Any) -> Settings:
    return Settings(node_name="n", vast_api_key="k" * 20, **overrides)


def node_pod(image: str, image_id: str = "") -> dict[str, Any]:
    return {
        "spec": {"containers": [{"name": "virtual-kubelet", "image": image}]},
        "status": {"containerStatuses": [{"name": "virtual-kubelet", "imageID": image_id}]},
    }


@pytest.mark.parametrize(
    ("image_id", "expected"),
    [
        ("docker-pullable://ghcr.io/o/vk@sha256:" + "a" * 64, "ghcr.io/o/vk@sha256:" + "a" * 64),
        ("ghcr.io/o/vk@sha256:" + "b" * 64, "ghcr.io/o/vk@sha256:" + "b" * 64),
        ("sha256:" + "c" * 64, "ghcr.io/o/vk:1"),  # a local image id: no repository
        ("", "ghcr.io/o/vk:1"),
    ],
)
def test_the_image_is_the_digest_the_pod_runs_else_its_spec(image_id: str, expected: str) -> None:
    assert pod_image(node_pod("ghcr.io/o/vk:1", image_id)) == expected


def test_the_node_container_is_chosen_among_several() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "side:1"},
                {"name": "virtual-kubelet", "image": "vk:1"},
            ]
        }
    }
    assert pod_image(pod) == "vk:1"
    assert pod_image({"spec": {}}) is None


async def test_the_layer_of_the_nodes_own_image_is_delivered(registry_sim: RegistrySim) -> None:
    built = registry_sim.add_image("vk-trio", "1", {"config": {}}, [b"base" * 10, LAYER])
    amd64 = registry_sim.host + "/vk-trio@" + built.digest
    kube = FakeKube(node_pod("ignored:1", "docker-pullable://" + amd64))
    found = await find_agent(
        settings(leader_elect_identity="vk-0", leader_elect_namespace="vk"), cast(KubeClient, kube)
    )
    assert kube.paths == ["/api/v1/namespaces/vk/pods/vk-0"]
    assert found.delivery is not None
    env = found.delivery.env(Pod())
    digest = built.layers[-1]
    assert env[AGENT_LAYER_ENV] == f"{registry_sim.url}/v2/vk-trio/blobs/{digest}"
    assert env[AGENT_LAYER_SHA256_ENV] == digest.removeprefix("sha256:")
    assert env[AGENT_TOKEN_URL_ENV].startswith(f"{registry_sim.url}/token?")
    assert "scope=repository%3Avk-trio%3Apull" in env[AGENT_TOKEN_URL_ENV]
    assert AGENT_URL_ENV not in env


async def test_agent_url_wins_over_the_image(registry_sim: RegistrySim) -> None:
    found = await find_agent(
        settings(agent_url="http://127.0.0.1:1/agent", agent_sha256="0" * 64),
        cast(KubeClient, FakeKube(None)),
    )
    assert found.delivery is not None and not found.delivery.layer
    assert found.delivery.env(Pod())[AGENT_URL_ENV] == "http://127.0.0.1:1/agent"


async def test_a_private_node_image_refuses_agent_pods_with_the_reason(
    registry_sim: RegistrySim,
) -> None:
    registry_sim.add_image("own/vk", "1", {"config": {}}, [LAYER], private=True)
    found = await find_agent(
        settings(agent_image=f"{registry_sim.host}/own/vk:1"), cast(KubeClient, FakeKube(None))
    )
    assert found.delivery is None
    assert "is private" in found.missing and "--agent-url" in found.missing
    with pytest.raises(InvalidPod) as caught:
        agent_placement(_agent_pod(), None, missing=found.missing)
    assert caught.value.reason == "AgentNotConfigured"
    assert "is private" in str(caught.value)


async def test_outside_a_cluster_there_is_no_agent_and_it_says_why() -> None:
    found = await find_agent(settings(), cast(KubeClient, FakeKube(None)))
    assert found.delivery is None and "POD_NAME" in found.missing


async def test_a_missing_pod_or_registry_does_not_stop_the_node(
    registry_sim: RegistrySim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_source, "DISCOVERY_TRIES", 1)
    gone = await find_agent(
        settings(leader_elect_identity="vk-0"), cast(KubeClient, FakeKube(None))
    )
    assert gone.delivery is None and "kube-system/vk-0" in gone.missing
    registry_sim.stop()
    down = await find_agent(
        settings(agent_image=f"{registry_sim.host}/vk:1"), cast(KubeClient, FakeKube(None))
    )
    assert down.delivery is None and "could not be read" in down.missing


def _agent_pod() -> Pod:
    return msgspec.convert(
        {
            "metadata": {"name": "p", "namespace": "d", "annotations": {"vast.ai/agent": "true"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
        },
        Pod,
    )
