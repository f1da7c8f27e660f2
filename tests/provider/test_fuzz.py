"""Issue 4, bad input: malformed annotations and pod specs never end in anything but valid
requirements and a valid create request, or one typed error that names what is wrong.

The Vast responses are fuzzed in ``test_fuzz_vast.py`` and the whole node in
``test_fuzz_node.py``. Every test here is pure (no sockets), so hypothesis can afford
hundreds of examples in a few seconds.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import msgspec
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vk_trio.kube.models import ConfigMap, Pod, Secret
from vk_trio.provider.requirements import (
    ANNOTATIONS,
    GPU_RESOURCE,
    MAX_STARTUP_TIMEOUT,
    AnnotationError,
    Requirements,
    parse_requirements,
)
from vk_trio.provider.selection import (
    build_query,
    explain_query,
)
from vk_trio.provider.spec import (
    MissingReference,
    SpecError,
    chosen_container,
    instance_request,
    skipped_containers,
)
from vk_trio.vast.models import Instance

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# Building blocks

NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "9" * 400, "0" * 50 + "1", ".", "-0", "1e-9"]),
    st.integers(min_value=0, max_value=500).map(lambda n: "9" * n + ".5"),
)
UNITS = st.sampled_from(
    ["", "%", "$", "GB", "Gi", "MB", "TB", "Ti", "m", "h", "s", "1h30m", "ms", "d", "²", " GB "]
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.tuples(NUMBERS, UNITS).map("".join),
    st.tuples(UNITS, NUMBERS).map("".join),
    st.sampled_from(["", " ", "\t", "\n", "true", "FALSE", "yes", "0", "1", "\x00", "١٢"]),
    st.sampled_from(["North America", "EU", "US,CA", "[US,,CA]", "Mars", "*", "global"]),
    st.sampled_from(["RTX 3060", "rtx_3060", "RTX 3060,RTX 4070", ",", "RTX 3060 , rtx_3060"]),
    st.lists(st.text(max_size=8), max_size=6).map(",".join),
    st.text(min_size=1000, max_size=3000),
)
KEYS = st.one_of(
    st.sampled_from(ANNOTATIONS),
    st.sampled_from(ANNOTATIONS).map(lambda key: key.upper()),
    st.sampled_from(ANNOTATIONS).map(lambda key: key.replace("-", "_")),
    st.text(max_size=20).map(lambda rest: "vast.ai/" + rest),
    st.text(max_size=30),
)
ANNOTATION_MAPS = st.dictionaries(KEYS, VALUES, max_size=12)
GPU_LIMITS = st.one_of(st.none(), VALUES, NUMBERS)
GPU_LIMIT_KEY = f'resources.limits["{GPU_RESOURCE}"]'


def check_requirements(req: Requirements) -> None:
    """Everything downstream relies on: finite, positive, in range, and JSON for the query."""
    positive_or_none = (req.price_max, req.min_gpu_ram_mb, req.min_cuda, req.startup_timeout)
    for value in positive_or_none:
        assert value is None or (math.isfinite(value) and value > 0), req
    assert math.isfinite(req.disk_gb) and req.disk_gb > 0, req
    assert 0 <= req.min_reliability <= 1, req
    assert req.num_gpus >= 1, req
    assert req.startup_timeout is None or req.startup_timeout <= MAX_STARTUP_TIMEOUT
    assert all(name and "," not in name and name == name.strip() for name in req.gpu_names)
    assert len({name.casefold() for name in req.gpu_names}) == len(req.gpu_names)
    if req.countries is not None:
        assert req.countries and all(len(c) == 2 and c.isupper() for c in req.countries)
    for query in (build_query(req), explain_query(req)):
        # Vast's JSON has no NaN or Infinity: a non-finite number would not even encode.
        assert msgspec.json.decode(msgspec.json.encode(query)) == query
    assert req.describe()


def check_annotation_error(
    error: AnnotationError, annotations: Mapping[str, str], gpu_limit: str | None
) -> None:
    """One line per problem, each starting with the annotation (or the GPU limit) it is about."""
    assert error.problems and str(error)
    for problem in error.problems:
        key = problem.split(": ", 1)[0]
        assert key in annotations or (key == GPU_LIMIT_KEY and gpu_limit is not None), problem
        assert len(problem) < 1000, "a huge value must not be echoed whole into an Event"


# --------------------------------------------------------------------------------------------
# Annotations


@FUZZ
@given(annotations=ANNOTATION_MAPS, gpu_limit=GPU_LIMITS)
@example(annotations={"vast.ai/price-max": "9" * 400}, gpu_limit=None)
@example(annotations={"vast.ai/memory": "9" * 400 + "GB"}, gpu_limit=None)
@example(annotations={"vast.ai/disk": "9" * 400}, gpu_limit=None)
@example(annotations={"vast.ai/min-cuda": "9" * 400}, gpu_limit=None)
@example(annotations={"vast.ai/startup-timeout": "9" * 400 + "s"}, gpu_limit=None)
@example(annotations={"vast.ai/price-max": "x" * 3000}, gpu_limit="9" * 5000)
def test_annotations_parse_or_name_the_annotation(
    annotations: dict[str, str], gpu_limit: str | None
) -> None:
    try:
        req = parse_requirements(annotations, gpu_limit=gpu_limit)
    except AnnotationError as error:
        check_annotation_error(error, annotations, gpu_limit)
    else:
        check_requirements(req)


@FUZZ
@given(
    key=st.sampled_from([k for k in ANNOTATIONS if k != "vast.ai/gpu-fallbacks"]),
    value=VALUES,
)
def test_each_annotation_alone_parses_or_is_named(key: str, value: str) -> None:
    """One annotation at a time, so every parser sees every kind of garbage often."""
    try:
        check_requirements(parse_requirements({key: value}))
    except AnnotationError as error:
        assert {problem.split(": ", 1)[0] for problem in error.problems} == {key}


# --------------------------------------------------------------------------------------------
# Pod specs: JSON of roughly the right shape, with wrong types, nulls and huge values mixed in

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``strategy``, once in 30 any JSON value (wrong type, null, huge number): rare
    enough that a good share of pods still decode and reach the spec code."""
    return st.integers(0, 29).flatmap(lambda n: JSON if n == 0 else strategy)


def fields(
    required: Mapping[str, st.SearchStrategy[Any]] | None = None, **parts: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose every field may have the wrong type, and the optional ones be missing."""
    return st.fixed_dictionaries(
        {k: maybe(v) for k, v in (required or {}).items()},
        optional={k: maybe(v) for k, v in parts.items()},
    )


NAMES = st.sampled_from(["main", "app", "side", "", "MAIN", "a" * 300, "$(X)"]) | st.text(
    max_size=10
)
ENV_NAMES = st.sampled_from(["FOO", "BAR", "-p", "1X", "a.b", "", "X_$(FOO)"]) | st.text(max_size=6)
KEY_REF = fields(name=st.sampled_from(["s", "c", "missing"]), key=ENV_NAMES, optional=st.booleans())
ENV_VAR = fields(
    {"name": ENV_NAMES},
    value=st.text(max_size=20) | st.sampled_from(["$(FOO)", "$$(FOO)", "$(", "$(BAR)x$"]),
    valueFrom=fields(
        secretKeyRef=KEY_REF,
        configMapKeyRef=KEY_REF,
        fieldRef=fields(
            fieldPath=st.sampled_from(
                ["metadata.name", "metadata.labels['a']", "spec.nodeName", "status.podIP", ""]
            )
            | st.text(max_size=12)
        ),
        resourceFieldRef=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    ),
)
NAME_REF = fields(name=st.sampled_from(["s", "c", "pull", "missing"]), optional=st.booleans())
PORT = fields(
    {"containerPort": st.integers(-5, 70000) | st.sampled_from([2**63, 2**64])},
    protocol=st.sampled_from(["TCP", "UDP", "SCTP", "tcp", ""]),
    name=st.text(max_size=5),
    hostPort=st.integers(),
)
QUANTITIES = st.sampled_from(["1", "2", "0", "-1", "500m", "1e3", "", " 1 ", "+2", "9" * 100])
CONTAINER = fields(
    {"name": NAMES},
    image=st.sampled_from(["nginx:1.27", "ghcr.io/x/y:1", "", "  ", "localhost:5000/a"]),
    command=st.lists(st.text(max_size=10) | st.sampled_from(["$(FOO)", "$$"]), max_size=3),
    args=st.lists(st.text(max_size=10), max_size=3),
    env=st.lists(ENV_VAR, max_size=4),
    envFrom=st.lists(
        fields(prefix=st.text(max_size=4), secretRef=NAME_REF, configMapRef=NAME_REF), max_size=2
    ),
    ports=st.lists(PORT, max_size=3),
    resources=fields(
        limits=st.dictionaries(st.sampled_from([GPU_RESOURCE, "cpu"]), QUANTITIES, max_size=2),
        requests=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    ),
)
POD = fields(
    metadata=fields(
        name=NAMES,
        namespace=st.sampled_from(["default", ""]),
        uid=st.uuids().map(str),
        annotations=st.dictionaries(
            KEYS | st.just("vast.ai/container"), VALUES | NAMES, max_size=5
        ),
        labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        deletionGracePeriodSeconds=st.integers(),
    ),
    spec=fields(
        {"containers": st.lists(CONTAINER, min_size=1, max_size=3)},
        initContainers=st.lists(CONTAINER, max_size=1),
        imagePullSecrets=st.lists(NAME_REF, max_size=2),
        restartPolicy=st.sampled_from(["Always", "Never", "OnFailure", "Sometimes"]),
        nodeName=st.text(max_size=5),
    ),
)

SECRET_VALUES = st.one_of(
    st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(max_size=12),  # not base64, or not ASCII at all
    st.sampled_from(["", "=", "é", "////", base64.b64encode("é".encode("latin-1")).decode()]),
)
DOCKER_AUTH = fields(
    username=st.text(max_size=6),
    password=st.text(max_size=6),
    auth=st.text(max_size=8) | st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
)
DOCKER_CONFIGS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "auths": st.dictionaries(
                st.sampled_from(["docker.io", "ghcr.io", "https://x"]), DOCKER_AUTH
            )
        }
    ),
).map(lambda doc: base64.b64encode(msgspec.json.encode(doc)).decode())
SECRET_DATA = st.dictionaries(
    ENV_NAMES | st.sampled_from([".dockerconfigjson", ".dockercfg"]),
    SECRET_VALUES | DOCKER_CONFIGS,
    max_size=4,
)


class Objects:
    """An ``ObjectLookup`` holding one Secret ``s``/``pull`` and one ConfigMap ``c``."""

    def __init__(self, secret: dict[str, str], config_map: dict[str, str]) -> None:
        self._secret = Secret(data=secret)
        self._config_map = ConfigMap(data=config_map)

    async def secret(self, namespace: str, name: str) -> Secret | None:
        return self._secret if name in ("s", "pull") else None

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        return self._config_map if name == "c" else None


def decode_pod(document: Any) -> Pod | None:
    """The pod as the watch decodes it, or None where the watch logs it and skips it."""
    try:
        return msgspec.json.decode(msgspec.json.encode(document), type=Pod)
    except msgspec.ValidationError:
        return None


def fuzz_pod(container: dict[str, Any], *, pull: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "nginx:1.27", **container}]}
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": pull}]
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": spec}


@FUZZ
@given(
    document=POD,
    secret=SECRET_DATA,
    config_map=st.dictionaries(ENV_NAMES, st.text(max_size=8), max_size=3),
)
@example(
    document=fuzz_pod({"envFrom": [{"secretRef": {"name": "s"}}]}),
    secret={"K": "é"},
    config_map={},
)
@example(
    document=fuzz_pod({}, pull="pull"),
    secret={
        ".dockerconfigjson": base64.b64encode(
            msgspec.json.encode({"auths": {"docker.io": {"auth": "é"}}})
        ).decode()
    },
    config_map={},
)
@example(
    document=fuzz_pod({}, pull="pull"),
    secret={".dockerconfigjson": base64.b64encode(b"[" * 100_000).decode()},
    config_map={},
)
def test_pod_specs_become_a_request_or_a_spec_error(
    document: dict[str, Any], secret: dict[str, str], config_map: dict[str, str]
) -> None:
    pod = decode_pod(document)
    if pod is None:
        return
    lookup = Objects(secret, config_map)

    async def request() -> None:
        try:
            container = chosen_container(pod)
            assert container.name not in skipped_containers(pod)
            req = parse_requirements(
                pod.metadata.annotations, gpu_limit=container.resources.limits.get(GPU_RESOURCE)
            )
            create, secrets = await instance_request(
                pod, label="vk-x", disk_gb=req.disk_gb, lookup=lookup
            )
        except (SpecError, MissingReference, AnnotationError) as error:
            assert str(error)
            return
        check_requirements(req)
        assert create.image and create.image == create.image.strip()
        body = msgspec.json.decode(msgspec.json.encode(create))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in body["env"].items())
        assert all(not key.startswith("-") or key.startswith("-p ") for key in body["env"])
        assert all(isinstance(secret, str) for secret in secrets)

    trio.run(request)


# --------------------------------------------------------------------------------------------
# Vast's port map, as the status report reads it


@FUZZ
@given(
    ports=st.dictionaries(
        st.text(max_size=8),
        st.lists(
            st.fixed_dictionaries(
                {"HostPort": st.text(max_size=7) | st.integers() | st.sampled_from(["80", "٨٠"])}
            ),
            max_size=2,
        ),
        max_size=4,
    ),
    address=st.sampled_from(["1.2.3.4 \n", "", "  "]),
)
def test_instance_endpoints_never_fail(ports: dict[str, Any], address: str) -> None:
    try:
        instance = msgspec.convert(
            {"id": 1, "public_ipaddr": address, "ports": ports}, type=Instance
        )
    except msgspec.ValidationError:
        return
    for spec, endpoint in instance.endpoints().items():
        host, _, port = endpoint.rpartition(":")
        assert spec in ports and host == "1.2.3.4" and 0 < int(port) < 65536
