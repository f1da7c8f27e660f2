"""Pod spec → Vast create request (``vk_trio.provider.spec``): container choice, command/args,
env resolution with the kubelet's rules, ports, registry credentials, and secret tracking."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.kube.models import ConfigMap, Pod, Secret
from vk_trio.provider.spec import (
    MissingReference,
    SpecError,
    chosen_container,
    expand,
    image_registry,
    instance_request,
    skipped_containers,
)
from vk_trio.vast.models import CreateInstance


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeLookup:
    """In-memory Secrets and ConfigMaps, keyed by (namespace, name); counts reads."""

    def __init__(
        self, secrets: dict[str, dict[str, str]] | None = None, **config_maps: dict[str, str]
    ) -> None:
        self.secrets = {
            ("ns", name): Secret(data={k: b64(v) for k, v in data.items()})
            for name, data in (secrets or {}).items()
        }
        self.config_maps = {
            ("ns", name): ConfigMap(data=data) for name, data in config_maps.items()
        }
        self.reads = 0

    def add_raw_secret(self, name: str, data: dict[str, str], type_: str = "") -> None:
        self.secrets[("ns", name)] = Secret(data=data, type=type_)

    async def secret(self, namespace: str, name: str) -> Secret | None:
        self.reads += 1
        return self.secrets.get((namespace, name))

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        self.reads += 1
        return self.config_maps.get((namespace, name))


def make_pod(container: dict[str, Any] | None = None, **spec: Any) -> Pod:
    body: dict[str, Any] = {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "web"},
            "annotations": {"team": "gpu"},
        },
        "spec": {
            "nodeName": "vast-node",
            "serviceAccountName": "runner",
            "containers": [{"name": "main", "image": "ubuntu:22.04", **(container or {})}],
            **spec,
        },
    }
    return msgspec.convert(body, Pod)


async def request(
    pod: Pod, lookup: FakeLookup | None = None, **kwargs: Any
) -> tuple[CreateInstance, set[str]]:
    return await instance_request(
        pod, label="vk-ns-web", disk_gb=50.0, lookup=lookup or FakeLookup(), **kwargs
    )


# --------------------------------------------------------------------------------------------
# Containers


def test_first_container_by_default_and_others_skipped() -> None:
    pod = make_pod(
        containers=[{"name": "app", "image": "a"}, {"name": "sidecar", "image": "b"}],
    )
    assert chosen_container(pod).name == "app"
    assert skipped_containers(pod) == ["sidecar"]


def test_annotation_chooses_the_container() -> None:
    pod = make_pod(containers=[{"name": "app", "image": "a"}, {"name": "gpu", "image": "b"}])
    pod.metadata.annotations["vast.ai/container"] = "gpu"
    assert chosen_container(pod).image == "b"
    assert skipped_containers(pod) == ["app"]


def test_annotation_naming_no_container() -> None:
    pod = make_pod()
    pod.metadata.annotations["vast.ai/container"] = "nope"
    with pytest.raises(
        SpecError,
        match=r'vast.ai/container: "nope" is not a container of pod'
        r' ns/web; expected one of "main"',
    ):
        chosen_container(pod)


def test_pod_without_containers() -> None:
    with pytest.raises(SpecError, match="has no containers"):
        chosen_container(make_pod(containers=[]))


# --------------------------------------------------------------------------------------------
# The request body


async def test_basic_request() -> None:
    body, secrets = await request(make_pod(), bid_price=0.12)
    assert body == CreateInstance(
        image="ubuntu:22.04",
        disk=50.0,
        label="vk-ns-web",
        env={},
        runtype="args",
        onstart=None,
        args=[],
        image_login=None,
        price=0.12,
    )
    assert secrets == set()
    assert body.client_id == "me"


async def test_on_demand_has_no_price() -> None:
    body, _ = await request(make_pod())
    assert body.price is None


async def test_empty_image() -> None:
    with pytest.raises(SpecError, match='container "main" of pod ns/web has no image'):
        await request(make_pod({"image": " "}))


@pytest.mark.parametrize(
    ("command", "args", "onstart", "sent_args"),
    [
        ([], [], None, []),
        ([], ["--port", "8000"], None, ["--port", "8000"]),
        (["python"], [], "python", []),
        (["/bin/sh", "-c", "sleep 1"], [], "/bin/sh", ["-c", "sleep 1"]),
        (["python", "-u"], ["serve.py", "--x"], "python", ["-u", "serve.py", "--x"]),
    ],
)
async def test_command_and_args(
    command: list[str], args: list[str], onstart: str | None, sent_args: list[str]
) -> None:
    body, _ = await request(make_pod({"command": command, "args": args}))
    assert (body.onstart, body.args) == (onstart, sent_args)


async def test_command_and_args_are_expanded() -> None:
    pod = make_pod(
        {
            "command": ["$(BIN)", "$$(BIN)"],
            "args": ["--model=$(MODEL)", "$(UNSET)"],
            "env": [{"name": "BIN", "value": "python"}, {"name": "MODEL", "value": "llama"}],
        }
    )
    body, _ = await request(pod)
    assert body.onstart == "python"
    assert body.args == ["$(BIN)", "--model=llama", "$(UNSET)"]


# --------------------------------------------------------------------------------------------
# Expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$(A)", "a"),
        ("x-$(A)-$(B)-y", "x-a-b-y"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("a$$b", "a$b"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("end$", "end$"),
        ("$()", ""),
        ("$(A)$(A)", "aa"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    values = {"A": "a", "B": "b", "": ""}
    assert expand(text, lambda name: values.get(name, f"$({name})")) == expected


# --------------------------------------------------------------------------------------------
# Environment


async def test_env_from_then_env() -> None:
    lookup = FakeLookup(
        {"creds": {"TOKEN": "s3cr3t-token", "1BAD": "x"}},
        settings={"MODE": "fast", "LEVEL": "3", "bad name": "x"},
    )
    pod = make_pod(
        {
            "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                {"secretRef": {"name": "creds"}},
            ],
            "env": [
                {"name": "CFG_MODE", "value": "slow"},
                {"name": "URL", "value": "https://x/?t=$(TOKEN)&m=$(CFG_MODE)&z=$(LATER)"},
                {"name": "LATER", "value": "late"},
                {"name": "EMPTY"},
            ],
        }
    )
    body, secrets = await request(pod, lookup)
    assert body.env == {
        "CFG_MODE": "slow",
        "CFG_LEVEL": "3",
        "TOKEN": "s3cr3t-token",
        "URL": "https://x/?t=s3cr3t-token&m=slow&z=$(LATER)",
        "LATER": "late",
        "EMPTY": "",
    }
    assert "s3cr3t-token" in secrets


async def test_invalid_and_option_like_names_are_skipped() -> None:
    pod = make_pod(
        {
            "env": [
                {"name": "-p", "value": "8000:8000"},
                {"name": "9LIVES", "value": "x"},
                {"name": "my.var-1", "value": "ok"},
            ]
        }
    )
    body, _ = await request(pod)
    assert body.env == {"my.var-1": "ok"}


async def test_key_refs() -> None:
    lookup = FakeLookup({"db": {"password": "hunter22"}}, conf={"host": "db.local"})
    pod = make_pod(
        {
            "env": [
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "HOST", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "host"}}},
                {
                    "name": "OPT",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": True}},
                },
                {
                    "name": "OPT2",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "gone", "key": "k", "optional": True}
                    },
                },
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            ]
        }
    )
    body, secrets = await request(pod, lookup)
    assert body.env == {"PW": "hunter22", "HOST": "db.local"}
    assert secrets == {"hunter22"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}],
            'secret "gone" not found, required by pod ns/web',
        ),
        (
            [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}],
            'secret "db" doesn\'t contain the "user" key required by pod ns/web',
        ),
        (
            [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "port"}}}],
            'configmap "conf" doesn\'t contain the "port" key required by pod ns/web',
        ),
    ],
)
async def test_missing_required_key_refs_are_temporary(
    env: list[dict[str, Any]], message: str
) -> None:
    lookup = FakeLookup({"db": {"password": "pw"}}, conf={"host": "h"})
    with pytest.raises(MissingReference) as caught:
        await request(make_pod({"env": env}), lookup)
    assert str(caught.value) == message
    assert isinstance(caught.value, TemporaryError)


@pytest.mark.parametrize("kind", ["configMapRef", "secretRef"])
async def test_env_from_missing(kind: str) -> None:
    optional = make_pod({"envFrom": [{kind: {"name": "gone", "optional": True}}]})
    body, _ = await request(optional)
    assert body.env == {}
    required = make_pod({"envFrom": [{kind: {"name": "gone"}}]})
    with pytest.raises(MissingReference, match='"gone" not found'):
        await request(required)


async def test_undecodable_secret() -> None:
    lookup = FakeLookup()
    lookup.add_raw_secret("raw", {"k": "!!not base64!!"})
    pod = make_pod(
        {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "raw", "key": "k"}}}]}
    )
    with pytest.raises(SpecError, match='key "k" of secret "raw" used by pod ns/web'):
        await request(pod, lookup)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "web"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['team']", "gpu"),
        ("metadata.labels", 'app="web"'),
        ("spec.nodeName", "vast-node"),
        ("spec.serviceAccountName", "runner"),
    ],
)
async def test_field_refs(path: str, value: str) -> None:
    pod = make_pod({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    body, _ = await request(pod)
    assert body.env == {"V": value}


@pytest.mark.parametrize("path", ["spec.containers", "status.phase"])
async def test_unsupported_field_refs(path: str) -> None:
    pod = make_pod({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    with pytest.raises(SpecError, match=f'unsupported fieldPath "{path}"') as caught:
        await request(pod)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    "path", ["status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs"]
)
async def test_the_pods_address_needs_the_agent(path: str) -> None:
    pod = make_pod({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    with pytest.raises(SpecError, match=f'fieldPath "{path}" .* needs the vk-trio agent'):
        await request(pod)


async def test_each_object_is_read_once() -> None:
    lookup = FakeLookup({"s": {"A": "aaaa", "B": "bbbb"}})
    refs = [{"name": n, "valueFrom": {"secretKeyRef": {"name": "s", "key": n}}} for n in "AB"]
    await request(make_pod({"env": refs, "envFrom": [{"secretRef": {"name": "s"}}]}), lookup)
    assert lookup.reads == 1


# --------------------------------------------------------------------------------------------
# Ports


async def test_ports() -> None:
    pod = make_pod(
        {
            "env": [{"name": "A", "value": "1"}],
            "ports": [
                {"containerPort": 8000},
                {"containerPort": 53, "protocol": "UDP"},
                {"containerPort": 22, "hostPort": 2222},
            ],
        }
    )
    body, _ = await request(pod)
    assert body.env == {"A": "1", "-p 8000:8000": "1", "-p 53:53/udp": "1", "-p 22:22": "1"}


async def test_probe_ports_are_published() -> None:
    """vk-trio probes from outside: a probe's port needs a mapping even when not listed."""
    pod = make_pod(
        {
            "ports": [{"containerPort": 8000, "name": "http"}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 9000}},
            "startupProbe": {"grpc": {"port": 50051}},
        }
    )
    body, _ = await request(pod)
    assert body.env == {"-p 8000:8000": "1", "-p 9000:9000": "1", "-p 50051:50051": "1"}


async def test_sctp_port() -> None:
    pod = make_pod({"ports": [{"containerPort": 9, "protocol": "SCTP"}]})
    with pytest.raises(SpecError, match=r"9/SCTP .* TCP and UDP only"):
        await request(pod)


# --------------------------------------------------------------------------------------------
# Registry credentials


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("ubuntu", "docker.io"),
        ("ubuntu:22.04", "docker.io"),
        ("pytorch/pytorch:2.3.0-cuda12.1", "docker.io"),
        ("docker.io/library/ubuntu", "docker.io"),
        ("index.docker.io/x/y", "docker.io"),
        ("ghcr.io/org/app:1", "ghcr.io"),
        ("localhost/app", "localhost"),
        ("registry.local:5000/app", "registry.local:5000"),
        ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io"),
    ],
)
def test_image_registry(image: str, registry: str) -> None:
    assert image_registry(image) == registry


def docker_config(auths: dict[str, dict[str, str]]) -> dict[str, str]:
    return {".dockerconfigjson": b64(json.dumps({"auths": auths}))}


async def test_image_login_matches_the_image_registry() -> None:
    lookup = FakeLookup()
    lookup.add_raw_secret(
        "ghcr",
        docker_config({"https://ghcr.io": {"username": "bot", "password": "ghp_tokenvalue"}}),
        "kubernetes.io/dockerconfigjson",
    )
    lookup.add_raw_secret(
        "hub",
        docker_config({"https://index.docker.io/v1/": {"auth": b64("alice:hub-pass-1")}}),
        "kubernetes.io/dockerconfigjson",
    )
    secrets = [{"name": "absent"}, {"name": "ghcr"}, {"name": "hub"}]
    body, used = await request(make_pod({"image": "alice/app:1"}, imagePullSecrets=secrets), lookup)
    assert body.image_login == "-u alice -p hub-pass-1 docker.io"
    assert used == {"hub-pass-1"}
    body, used = await request(make_pod({"image": "ghcr.io/o/a"}, imagePullSecrets=secrets), lookup)
    assert body.image_login == "-u bot -p ghp_tokenvalue ghcr.io"
    assert used == {"ghp_tokenvalue"}
    body, _ = await request(make_pod({"image": "quay.io/o/a"}, imagePullSecrets=secrets), lookup)
    assert body.image_login is None


async def test_legacy_dockercfg_secret() -> None:
    lookup = FakeLookup()
    lookup.add_raw_secret(
        "old",
        {
            ".dockercfg": b64(
                json.dumps({"nvcr.io": {"username": "$oauthtoken", "password": "k-123"}})
            )
        },
    )
    pod = make_pod({"image": "nvcr.io/nvidia/cuda"}, imagePullSecrets=[{"name": "old"}])
    body, _ = await request(pod, lookup)
    assert body.image_login == "-u $oauthtoken -p k-123 nvcr.io"


async def test_unreadable_pull_secret_is_skipped() -> None:
    lookup = FakeLookup()
    lookup.add_raw_secret("junk", {".dockerconfigjson": b64("not json")})
    body, _ = await request(make_pod(imagePullSecrets=[{"name": "junk"}]), lookup)
    assert body.image_login is None


async def test_credentials_with_whitespace() -> None:
    lookup = FakeLookup()
    lookup.add_raw_secret("ws", docker_config({"docker.io": {"username": "a b", "password": "p"}}))
    with pytest.raises(SpecError, match='image pull secret "ws" of pod ns/web'):
        await request(make_pod(imagePullSecrets=[{"name": "ws"}]), lookup)
