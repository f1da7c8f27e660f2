"""Who runs under the agent, what is refused before anything is bought, and the bundle the
agent is handed: argv as the kubelet would run it (the pod's command, else the image's
ENTRYPOINT/CMD from its registry), env with Secret values, mounts, exec probes, init
containers. Pure, with in-memory objects and a fake registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

from tests.provider.fakes import MemoryObjects
from vk_trio.agent.protocol import Hook, HttpHook
from vk_trio.kube.models import Pod
from vk_trio.node.provider import InvalidPod
from vk_trio.provider.runtime import (
    AgentDelivery,
    CreateContainerConfigError,
    InstanceFacts,
    agent_placement,
    pod_bundle,
)
from vk_trio.provider.spec import SpecError
from vk_trio.registry import ImageConfig

DELIVERY = AgentDelivery("http://127.0.0.1:1/agent", "0" * 64, b"master")
SA_VOLUME = {
    "name": "kube-api-access-x1",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
}


def make_pod(
    container: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> Pod:
    body: dict[str, Any] = {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "annotations": annotations},
        "spec": {
            "containers": [{"name": "main", "image": "app:1", **(container or {})}],
            **spec,
        },
    }
    body["metadata"] = {k: v for k, v in body["metadata"].items() if v is not None}
    return msgspec.convert(body, Pod)


class FakeImages:
    def __init__(self, config: ImageConfig | None = None) -> None:
        self.config = config or ImageConfig(
            entrypoint=["/entry"], cmd=["--serve"], env=[], working_dir="", user="", digest="d"
        )
        self.asked: list[str] = []

    async def image_config(
        self, image: str, *, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageConfig:
        self.asked.append(image)
        return self.config


EXEC_PROBE = {"exec": {"command": ["cat", "/tmp/ok"]}, "periodSeconds": 5}


@pytest.mark.parametrize(
    ("pod", "runtime"),
    [
        (make_pod(), False),
        (make_pod(volumes=[SA_VOLUME]), False),
        (make_pod(volumes=[{"name": "scratch", "emptyDir": {}}]), True),
        (make_pod(initContainers=[{"name": "init", "image": "app:1"}]), True),
        (make_pod({"livenessProbe": EXEC_PROBE}), True),
        (
            make_pod(
                {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
            ),
            True,
        ),
        (make_pod(annotations={"vast.ai/agent": "true"}), True),
        (make_pod({"lifecycle": {"preStop": {"exec": {"command": ["save"]}}}}), True),
        (
            make_pod(
                {"env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
            ),
            True,
        ),
        (make_pod({"terminationMessagePolicy": "FallbackToLogsOnError"}), False),
    ],
    ids=[
        "plain",
        "service-account-only",
        "emptydir",
        "init",
        "exec-probe",
        "secret-env",
        "asked",
        "hooks",
        "pod-ip-env",
        "termination-message",
    ],
)
def test_who_runs_under_the_agent(pod: Pod, runtime: bool) -> None:
    assert agent_placement(pod, DELIVERY) is runtime


@pytest.mark.parametrize(
    ("pod", "delivery", "reason", "words"),
    [
        (
            make_pod(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]),
            DELIVERY,
            "UnsupportedVolume",
            'volume "data"',
        ),
        (
            make_pod(volumes=[{"name": "h", "hostPath": {"path": "/var"}}]),
            None,
            "UnsupportedVolume",
            "hostPath",
        ),
        (
            make_pod(volumes=[{"name": "scratch", "emptyDir": {}}]),
            None,
            "AgentNotConfigured",
            "volumes (scratch)",
        ),
        (
            make_pod(initContainers=[{"name": "fetch", "image": "curl:8"}]),
            DELIVERY,
            "InitContainerImage",
            "vast.ai/init-in-main-image",
        ),
        (
            make_pod({"livenessProbe": EXEC_PROBE}, annotations={"vast.ai/agent": "false"}),
            DELIVERY,
            "AgentRequired",
            "exec probes",
        ),
        (
            make_pod(annotations={"vast.ai/agent": "maybe"}),
            DELIVERY,
            "InvalidAnnotation",
            "maybe",
        ),
    ],
    ids=["pvc", "hostpath", "no-agent-url", "init-other-image", "agent-false", "bad-annotation"],
)
def test_what_is_refused_before_anything_is_bought(
    pod: Pod, delivery: AgentDelivery | None, reason: str, words: str
) -> None:
    with pytest.raises(InvalidPod) as refused:
        agent_placement(pod, delivery)
    assert refused.value.reason == reason
    assert words in str(refused.value)


def test_an_init_container_of_another_image_runs_in_the_main_one_when_asked() -> None:
    pod = make_pod(
        initContainers=[{"name": "fetch", "image": "curl:8", "command": ["true"]}],
        annotations={"vast.ai/init-in-main-image": "true"},
    )
    assert agent_placement(pod, DELIVERY) is True


def test_secret_env_without_an_agent_url_runs_as_before() -> None:
    pod = make_pod(
        {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    )
    assert agent_placement(pod, None) is False


async def test_the_bundle_runs_what_the_kubelet_would() -> None:
    objects = MemoryObjects(secrets={"s": {"k": "hunter2"}}, config_maps={"c": {"a.conf": "x"}})
    images = FakeImages()
    pod = make_pod(
        {
            "args": ["--port", "$(PORT)"],
            "env": [
                {"name": "PORT", "value": "8000"},
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "workingDir": "/srv",
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}],
            "readinessProbe": EXEC_PROBE,
        },
        volumes=[{"name": "cfg", "configMap": {"name": "c"}}],
        initContainers=[{"name": "init", "image": "app:1", "command": ["sh", "-c", "true"]}],
        restartPolicy="OnFailure",
        terminationGracePeriodSeconds=5,
    )
    bundle, secrets = await pod_bundle(pod, objects, images)
    main = bundle.container
    assert main.argv == ["/entry", "--port", "8000"]  # ENTRYPOINT + the pod's args, expanded
    assert ("T", "hunter2") in main.env and ("PORT", "8000") in main.env
    assert main.working_dir == "/srv"
    assert [(m.volume, m.path) for m in main.mounts] == [("cfg", "/etc/app")]
    assert [(p.kind, p.command, p.period) for p in main.probes] == [
        ("readiness", ["cat", "/tmp/ok"], 5.0)
    ]
    assert [i.argv for i in bundle.init_containers] == [["sh", "-c", "true"]]
    assert [v.name for v in bundle.volumes] == ["cfg"]
    assert bundle.restart_policy == "OnFailure" and bundle.termination_grace == 5.0
    assert "hunter2" in secrets
    assert "hunter2" in bundle.secret_values  # the agent keeps it out of its own log lines
    assert images.asked == ["app:1"]  # the init container has a command: no lookup


async def test_an_image_that_says_nothing_to_run_is_refused() -> None:
    images = FakeImages(
        ImageConfig(entrypoint=[], cmd=[], env=[], working_dir="", user="", digest="d")
    )
    with pytest.raises(SpecError, match="neither the pod nor the image"):
        await pod_bundle(make_pod(), MemoryObjects(), images)


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _resource_env(name: str, resource: str, divisor: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource}
    if divisor is not None:
        ref["divisor"] = divisor
    return {"name": name, "valueFrom": {"resourceFieldRef": ref}}


async def test_the_downward_api_env_under_the_agent() -> None:
    pod = make_pod(
        {
            "command": ["run"],
            "env": [
                _field_env("POD_IP", "status.podIP"),
                _field_env("POD_IPS", "status.podIPs"),
                _field_env("HOST_IP", "status.hostIP"),
                _field_env("HOST_IPS", "status.hostIPs"),
                _field_env("NODE", "spec.nodeName"),
                _field_env("SA", "spec.serviceAccountName"),
                _resource_env("CPU_LIMIT", "limits.cpu"),
                _resource_env("CPU_REQUEST_M", "requests.cpu", "1m"),
                _resource_env("MEM_LIMIT_MI", "limits.memory", "1Mi"),
                _resource_env("DISK_LIMIT_GI", "limits.ephemeral-storage", "1G"),
                {"name": "URL", "value": "http://$(POD_IP):8000"},
            ],
            "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
        },
        nodeName="vast-node",
        serviceAccountName="runner",
    )
    facts = InstanceFacts(
        address="203.0.113.7", allocatable={"cpu": "12", "ephemeral-storage": "40G"}
    )
    bundle, _ = await pod_bundle(pod, MemoryObjects(), FakeImages(), facts)
    env = dict(bundle.container.env)
    assert env["POD_IP"] == env["HOST_IP"] == "203.0.113.7"
    assert env["POD_IPS"] == env["HOST_IPS"] == "203.0.113.7"
    assert (env["NODE"], env["SA"]) == ("vast-node", "runner")
    assert env["CPU_LIMIT"] == "12"  # unset: the instance's cores, as the node's allocatable
    assert env["CPU_REQUEST_M"] == "250"
    assert env["MEM_LIMIT_MI"] == "1024"
    assert env["DISK_LIMIT_GI"] == "40"
    assert env["URL"] == "http://203.0.113.7:8000"


async def test_hooks_and_termination_messages_reach_the_bundle() -> None:
    pod = make_pod(
        {
            "command": ["run"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "lifecycle": {
                "postStart": {
                    "httpGet": {
                        "path": "/warm",
                        "port": "http",
                        "httpHeaders": [{"name": "X-A", "value": "1"}],
                    }
                },
                "preStop": {"exec": {"command": ["sh", "-c", "save"]}},
            },
            "terminationMessagePath": "/tmp/why",
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
    )
    bundle, _ = await pod_bundle(pod, MemoryObjects(), FakeImages())
    main = bundle.container
    assert main.post_start == Hook(http=HttpHook(port=8080, path="/warm", headers=[("X-A", "1")]))
    assert main.pre_stop == Hook(exec=["sh", "-c", "save"])
    assert main.termination_message_path == "/tmp/why"
    assert main.termination_message_policy == "FallbackToLogsOnError"
    assert (bundle.pod_name, bundle.pod_namespace) == ("web", "ns")


async def test_a_hook_on_a_port_the_container_does_not_name_is_refused() -> None:
    pod = make_pod({"command": ["run"], "lifecycle": {"preStop": {"httpGet": {"port": "admin"}}}})
    with pytest.raises(SpecError, match='port "admin" is not a named port'):
        await pod_bundle(pod, MemoryObjects(), FakeImages())


async def test_sub_path_expr_under_the_agent() -> None:
    pod = make_pod(
        {
            "command": ["run"],
            "env": [{"name": "POD", "value": "web"}, _field_env("IP", "status.podIP")],
            "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": "$(POD)/$(IP)"}],
        },
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    bundle, _ = await pod_bundle(pod, MemoryObjects(), FakeImages(), InstanceFacts("10.0.0.1"))
    assert [m.sub_path for m in bundle.container.mounts] == ["web/10.0.0.1"]


async def test_a_sub_path_expr_that_leaves_the_volume_is_a_config_error() -> None:
    pod = make_pod(
        {
            "command": ["run"],
            "env": [{"name": "D", "value": "../etc"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": "$(D)"}],
        },
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    with pytest.raises(CreateContainerConfigError) as raised:
        await pod_bundle(pod, MemoryObjects(), FakeImages())
    assert raised.value.reason == "CreateContainerConfigError"
    assert str(raised.value) == "unable to provision SubPath `../etc`: must not contain '..'"
