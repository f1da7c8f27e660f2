"""Pod volumes → the agent's volumes (``vk_trio.provider.volumes``): each supported source as
the kubelet's plugins resolve it, each refused source with its one-line reason, and mounts."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.provider.fakes import MemoryObjects
from vk_trio.agent.protocol import Mount, Volume, VolumeFile
from vk_trio.kube.models import Pod
from vk_trio.provider.spec import MissingReference, SpecError, go_quote
from vk_trio.provider.volumes import container_mounts, pod_volumes, unsupported_volume

OBJECTS = MemoryObjects(
    secrets={
        "db": {"password": "hunter22", "user": "admin"},
        "tls": {"tls.key": "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----\n"},
        "bin": {"blob": b"\xff\x00\xfe"},
    },
    config_maps={"app": {"a.conf": "A", "b.conf": "B"}, "more": {"a.conf": "other"}},
    binary={"app": {"logo.png": b"\x89PNG"}},
)


def make_pod(
    *volumes: dict[str, Any], mounts: list[dict[str, Any]] | None = None, **container: Any
) -> Pod:
    body = {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "web", "tier": "a b"},
            "annotations": {"note": 'café "quoted"\n'},
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "ubuntu",
                    "volumeMounts": mounts or [],
                    "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
                    **container,
                }
            ],
            "volumes": list(volumes),
        },
    }
    return msgspec.convert(body, Pod)


def files(*entries: tuple[str, bytes] | tuple[str, bytes, int]) -> list[VolumeFile]:
    return [
        VolumeFile(path=entry[0], data=entry[1], mode=entry[2] if len(entry) > 2 else 0o644)
        for entry in entries
    ]


def downward(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "info", "downwardAPI": {"items": list(items)}}


def field(path: str, field_path: str) -> dict[str, Any]:
    return {"path": path, "fieldRef": {"fieldPath": field_path}}


def resource(path: str, name: str, divisor: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"containerName": "main", "resource": name}
    if divisor is not None:
        ref["divisor"] = divisor
    return {"path": path, "resourceFieldRef": ref}


RESOLVED = [
    pytest.param(
        {"name": "cfg", "configMap": {"name": "app"}},
        files(("a.conf", b"A"), ("b.conf", b"B"), ("logo.png", b"\x89PNG")),
        id="configmap-all-keys-with-binaryData",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {
                "name": "app",
                "defaultMode": 0o600,
                "items": [
                    {"key": "a.conf", "path": "conf/a"},
                    {"key": "logo.png", "path": "logo", "mode": 0o400},
                ],
            },
        },
        files(("conf/a", b"A", 0o600), ("logo", b"\x89PNG", 0o400)),
        id="configmap-items-rename-modes-defaultMode",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "./x//y"}]},
        },
        files(("x/y", b"A")),
        id="configmap-item-path-cleaned",
    ),
    pytest.param(
        {"name": "cfg", "configMap": {"name": "nope", "optional": True}},
        [],
        id="configmap-optional-missing-is-empty",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {"name": "app", "optional": True, "items": [{"key": "zz", "path": "z"}]},
        },
        [],
        id="configmap-optional-missing-key-skipped",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "db", "defaultMode": 0o400}},
        files(("password", b"hunter22", 0o400), ("user", b"admin", 0o400)),
        id="secret-all-keys-decoded",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "db", "items": [{"key": "user", "path": "u"}]}},
        files(("u", b"admin")),
        id="secret-items",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "bin"}},
        files(("blob", b"\xff\x00\xfe")),
        id="secret-binary",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "nope", "optional": True}},
        [],
        id="secret-optional-missing-is-empty",
    ),
    pytest.param(
        downward(
            field("name", "metadata.name"),
            field("ns", "metadata.namespace"),
            field("uid", "metadata.uid"),
            field("app", "metadata.labels['app']"),
        ),
        files(("app", b"web"), ("name", b"web"), ("ns", b"ns"), ("uid", b"u-1")),
        id="downward-fields",
    ),
    pytest.param(
        downward(field("labels", "metadata.labels"), field("annotations", "metadata.annotations")),
        files(
            ("annotations", b'note="caf\xc3\xa9 \\"quoted\\"\\n"'),
            ("labels", b'app="web"\ntier="a b"'),
        ),
        id="downward-labels-annotations-as-go-quotes",
    ),
    pytest.param(
        downward(
            resource("cpu", "limits.cpu"),
            resource("cpu-m", "limits.cpu", "1m"),
            resource("mem", "limits.memory"),
            resource("mem-mi", "limits.memory", "1Mi"),
            resource("req-cpu", "requests.cpu"),
            {**resource("disk", "limits.ephemeral-storage", "1Gi"), "mode": 0o600},
        ),
        files(
            ("cpu", b"2"),
            ("cpu-m", b"1500"),
            ("disk", b"50", 0o600),
            ("mem", b"1073741824"),
            ("mem-mi", b"1024"),
            ("req-cpu", b"0"),
        ),
        id="downward-resources-divisor-and-allocatable",
    ),
    pytest.param(
        {
            "name": "all",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {"configMap": {"name": "app", "items": [{"key": "a.conf", "path": "a"}]}},
                    {"secret": {"name": "db", "items": [{"key": "user", "path": "s/user"}]}},
                    {"downwardAPI": {"items": [field("name", "metadata.name")]}},
                    {"secret": {"name": "nope", "optional": True}},
                ],
            },
        },
        files(("a", b"A", 0o440), ("name", b"web", 0o440), ("s/user", b"admin", 0o440)),
        id="projected-merge",
    ),
    pytest.param(
        {
            "name": "kube-api-access-x7k2p",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {
                        "configMap": {
                            "name": "app",
                            "items": [{"key": "a.conf", "path": "ca.crt"}],
                        }
                    },
                    {"downwardAPI": {"items": [field("namespace", "metadata.namespace")]}},
                ]
            },
        },
        files(("ca.crt", b"A"), ("namespace", b"ns")),
        id="service-account-volume-without-its-token",
    ),
]


@pytest.mark.parametrize(("volume", "expected"), RESOLVED)
async def test_resolved(volume: dict[str, Any], expected: list[VolumeFile]) -> None:
    volumes, _ = await pod_volumes(
        make_pod(volume), OBJECTS, allocatable={"ephemeral-storage": "50Gi"}
    )
    assert volumes == [Volume(name=volume["name"], files=expected)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param({}, Volume(name="tmp"), id="disk"),
        pytest.param(
            {"medium": "Memory", "sizeLimit": "1Gi"},
            Volume(name="tmp", medium="Memory", size_limit=2**30),
            id="memory-with-limit",
        ),
        pytest.param({"sizeLimit": "1.5k"}, Volume(name="tmp", size_limit=1500), id="decimal"),
    ],
)
async def test_empty_dir(source: dict[str, Any], expected: Volume) -> None:
    volumes, secrets = await pod_volumes(make_pod({"name": "tmp", "emptyDir": source}), OBJECTS)
    assert volumes == [expected]
    assert secrets == set()


FAILURES = [
    pytest.param(
        {"name": "cfg", "configMap": {"name": "nope"}},
        MissingReference,
        'MountVolume.SetUp failed for volume "cfg" : configmap "nope" not found',
        id="configmap-missing",
    ),
    pytest.param(
        {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "zz", "path": "z"}]}},
        MissingReference,
        'MountVolume.SetUp failed for volume "cfg" : configmap references non-existent config'
        " key: zz",
        id="configmap-missing-key",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "nope"}},
        MissingReference,
        'MountVolume.SetUp failed for volume "s" : secret "nope" not found',
        id="secret-missing",
    ),
    pytest.param(
        {"name": "s", "secret": {"secretName": "db", "items": [{"key": "zz", "path": "z"}]}},
        MissingReference,
        'MountVolume.SetUp failed for volume "s" : references non-existent secret key: zz',
        id="secret-missing-key",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "/etc/a"}]},
        },
        SpecError,
        "invalid path: must be relative path: /etc/a",
        id="absolute-path",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "x/../a"}]},
        },
        SpecError,
        "invalid path: must not contain '..': x/../a",
        id="dotdot-element",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "..data"}]},
        },
        SpecError,
        "invalid path: must not start with '..': ..data",
        id="dotdot-prefix",
    ),
    pytest.param(
        {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o1777}},
        SpecError,
        "must be a number between 0 and 0777 (octal), both inclusive",
        id="mode-out-of-range",
    ),
    pytest.param(
        {
            "name": "all",
            "projected": {
                "sources": [{"configMap": {"name": "app"}}, {"configMap": {"name": "more"}}]
            },
        },
        SpecError,
        'MountVolume.SetUp failed for volume "all" : conflicting duplicate paths: a.conf',
        id="projected-path-clash",
    ),
    pytest.param(
        {
            "name": "cfg",
            "configMap": {
                "name": "app",
                "items": [{"key": "a.conf", "path": "a"}, {"key": "b.conf", "path": "a/b"}],
            },
        },
        SpecError,
        "conflicting paths: a is a file and a directory",
        id="file-and-directory",
    ),
    pytest.param(
        downward(field("node", "spec.nodeName")),
        SpecError,
        'fieldPath: Unsupported value: "spec.nodeName"',
        id="downward-env-only-field",
    ),
    pytest.param(
        downward(resource("gpu", "limits.nvidia.com/gpu")),
        SpecError,
        "unsupported container resource : limits.nvidia.com/gpu",
        id="downward-unsupported-resource",
    ),
    pytest.param(
        downward(
            {
                "path": "x",
                "resourceFieldRef": {"containerName": "sidecar", "resource": "limits.cpu"},
            }
        ),
        SpecError,
        "container sidecar not found",
        id="downward-unknown-container",
    ),
    pytest.param(
        {"name": "tmp", "emptyDir": {"sizeLimit": "lots"}},
        SpecError,
        'sizeLimit: invalid quantity "lots"',
        id="emptydir-bad-size",
    ),
]


@pytest.mark.parametrize(("volume", "error", "message"), FAILURES)
async def test_failures(volume: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        await pod_volumes(make_pod(volume), OBJECTS)
    assert message in str(raised.value)
    assert f'volume "{volume["name"]}"' in str(raised.value)


REFUSED = [
    pytest.param(
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        'volume "data" is a persistentVolumeClaim: a Vast instance cannot mount cluster storage;'
        " use an emptyDir, or fetch the data in an init container",
        id="pvc",
    ),
    pytest.param(
        {"name": "h", "hostPath": {"path": "/var/run"}},
        'volume "h" is a hostPath: the instance\'s host is not a node of the cluster; use an'
        " emptyDir",
        id="hostPath",
    ),
    pytest.param({"name": "c", "csi": {"driver": "x"}}, 'volume "c" is a csi:', id="csi"),
    pytest.param(
        {"name": "n", "nfs": {"server": "s", "path": "/"}}, 'volume "n" is a nfs:', id="nfs"
    ),
    pytest.param({"name": "e", "ephemeral": {}}, 'volume "e" is an ephemeral:', id="ephemeral"),
    pytest.param({"name": "i", "image": {"reference": "x"}}, 'volume "i" is an image:', id="image"),
    pytest.param(
        {"name": "g", "gitRepo": {"repository": "r"}}, "clone the repository", id="gitRepo"
    ),
    pytest.param({"name": "i", "iscsi": {}}, 'volume "i" is an iscsi:', id="iscsi"),
    pytest.param({"name": "s", "scaleIO": {}}, 'volume "s" is a scaleIO:', id="scaleIO"),
    pytest.param({"name": "u"}, 'volume "u" has a type vk-trio does not know', id="unknown"),
    pytest.param(
        {"name": "h", "emptyDir": {"medium": "HugePages-2Mi"}},
        'volume "h" is an emptyDir on medium "HugePages-2Mi"',
        id="emptydir-hugepages",
    ),
    pytest.param(
        {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
        'volume "t" projects a serviceAccountToken, which is not supported yet: a token for the'
        " cluster's API reaching a rented machine needs an explicit opt-in",
        id="projected-token",
    ),
    pytest.param(
        {"name": "t", "projected": {"sources": [{"clusterTrustBundle": {"path": "ca"}}]}},
        'volume "t" projects a clusterTrustBundle, which is not supported yet',
        id="projected-clusterTrustBundle",
    ),
    pytest.param(
        {"name": "t", "projected": {"sources": [{"podCertificate": {"signerName": "x"}}]}},
        'volume "t" projects a podCertificate, which is not supported yet',
        id="projected-podCertificate",
    ),
]


@pytest.mark.parametrize(("volume", "message"), REFUSED)
async def test_refused(volume: dict[str, Any], message: str) -> None:
    pod = make_pod({"name": "ok", "emptyDir": {}}, volume)
    refusal = unsupported_volume(pod)
    assert refusal is not None
    assert message in refusal
    assert "\n" not in refusal
    with pytest.raises(SpecError) as raised:
        await pod_volumes(pod, OBJECTS)
    assert str(raised.value) == refusal


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        pytest.param(
            [{"name": "ghost", "mountPath": "/g"}],
            'cannot find volume "ghost" to mount into container "main"',
            id="undeclared-volume",
        ),
    ],
)
def test_refused_mounts(mounts: list[dict[str, Any]], message: str) -> None:
    pod = make_pod({"name": "tmp", "emptyDir": {}}, mounts=mounts)
    refusal = unsupported_volume(pod)
    assert refusal is not None and message in refusal
    with pytest.raises(SpecError, match=message.split(" ")[0]):
        container_mounts(pod, pod.spec.containers[0])


@pytest.mark.parametrize(
    ("expr", "env", "expected"),
    [
        ("$(POD_NAME)/logs", {"POD_NAME": "web-0"}, "web-0/logs"),
        ("$$(POD_NAME)", {"POD_NAME": "web-0"}, "$(POD_NAME)"),
        ("a/$(X)$(Y)", {"X": "b", "Y": "c"}, "a/bc"),
        ("${POD_NAME}", {"POD_NAME": "web-0"}, "${POD_NAME}"),  # only $(VAR) expands
    ],
)
def test_sub_path_expr_is_expanded_from_the_containers_env(
    expr: str, env: dict[str, str], expected: str
) -> None:
    pod = make_pod(
        {"name": "tmp", "emptyDir": {}},
        mounts=[{"name": "tmp", "mountPath": "/t", "subPathExpr": expr}],
    )
    assert unsupported_volume(pod) is None
    [mount] = container_mounts(pod, pod.spec.containers[0], env)
    assert mount.sub_path == expected


@pytest.mark.parametrize(
    ("expr", "env", "message"),
    [
        ("$(DIR)", {"DIR": "/etc"}, "error SubPath `/etc` must not be an absolute path"),
        (
            "a/$(DIR)/b",
            {"DIR": ".."},
            "unable to provision SubPath `a/../b`: must not contain '..'",
        ),
        ("$(B)/$(A)", {"A": ""}, "missing value for A, B"),
    ],
)
def test_a_sub_path_expr_the_kubelet_refuses(expr: str, env: dict[str, str], message: str) -> None:
    pod = make_pod(
        {"name": "tmp", "emptyDir": {}},
        mounts=[{"name": "tmp", "mountPath": "/t", "subPathExpr": expr}],
    )
    with pytest.raises(SpecError) as raised:
        container_mounts(pod, pod.spec.containers[0], env)
    assert str(raised.value) == message


def test_supported_pod_is_not_refused() -> None:
    pod = make_pod(
        {"name": "tmp", "emptyDir": {"medium": "Memory"}},
        {"name": "cfg", "configMap": {"name": "app"}},
        mounts=[{"name": "tmp", "mountPath": "/t"}],
    )
    assert unsupported_volume(pod) is None


def test_mounts() -> None:
    pod = make_pod(
        {"name": "tmp", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "app"}},
        mounts=[
            {"name": "tmp", "mountPath": "/scratch"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "a.conf", "readOnly": True},
        ],
        workingDir="/scratch",
    )
    assert pod.spec.containers[0].working_dir == "/scratch"
    assert container_mounts(pod, pod.spec.containers[0]) == [
        Mount(volume="tmp", path="/scratch"),
        Mount(volume="cfg", path="/etc/app.conf", sub_path="a.conf", read_only=True),
    ]


async def test_secret_values_are_returned_for_redaction() -> None:
    pod = make_pod(
        {"name": "s", "secret": {"secretName": "db"}},
        {"name": "t", "projected": {"sources": [{"secret": {"name": "tls"}}]}},
        {"name": "b", "secret": {"secretName": "bin"}},
        {"name": "cfg", "configMap": {"name": "app"}},
    )
    _, secrets = await pod_volumes(pod, OBJECTS)
    assert {"hunter22", "admin", "AAAABBBBCCCCDDDD"} <= secrets
    assert "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----\n" in secrets
    assert not any(value in ("A", "B") for value in secrets)


async def test_each_object_is_read_once() -> None:
    objects = MemoryObjects(secrets={"db": {"user": "u"}}, config_maps={"app": {"k": "v"}})
    pod = make_pod(
        {"name": "a", "secret": {"secretName": "db"}},
        {"name": "b", "projected": {"sources": [{"secret": {"name": "db"}}]}},
        {"name": "c", "configMap": {"name": "app"}},
        {"name": "d", "configMap": {"name": "app", "items": [{"key": "k", "path": "k2"}]}},
    )
    await pod_volumes(pod, objects)
    assert objects.reads == 2


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        pytest.param("plain", '"plain"', id="plain"),
        pytest.param('a"b\\c', '"a\\"b\\\\c"', id="quote-and-backslash"),
        pytest.param("é😀", '"é😀"', id="printable-unicode-kept"),
        pytest.param("\x01\x7f\t", '"\\x01\\x7f\\t"', id="control"),
        pytest.param("\u00a0\u200b", '"\\u00a0\\u200b"', id="non-printable-unicode"),
        pytest.param("\U000e0001", '"\\U000e0001"', id="astral-non-printable"),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted
