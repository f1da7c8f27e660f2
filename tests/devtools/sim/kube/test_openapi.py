"""The stand-in's OpenAPI v3 and field validation (``vk_trio.devtools.sim.kube.openapi``): the
shipped schemas are current, every served kind has one, the documents have what kubectl looks for,
and ``fieldValidation`` behaves as on a real server. kubectl itself is exercised in
``test_kubectl_apply.py``."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.devtools.sim.kube import openapi as kube_openapi
from vk_trio.devtools.sim.kube.kinds import BY_PLURAL, RESOURCES
from vk_trio.devtools.sim.kube.store import ApiError

ROOT = Path(__file__).resolve().parents[4]
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "labels": {"a": "b"}},
    "spec": {
        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "bogus": 1}]}],
        "nodeSelectr": {"type": "gpu"},
    },
}


def test_the_shipped_schemas_are_generated_from_the_pinned_kubernetes_release() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "kube_openapi_schemas.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert kube_openapi.SCHEMAS_FILE.stat().st_size < 200_000  # it ships: keep it small


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_every_served_kind_has_a_schema_with_its_group_version_kind(resource: Any) -> None:
    schema = kube_openapi.SCHEMAS[kube_openapi.schema_name(resource)]
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    assert gvk in schema["x-kubernetes-group-version-kind"]


async def test_index_and_documents_are_what_kubectl_reads(kube_sim: KubeSim) -> None:
    async with httpx.AsyncClient(base_url=kube_sim.url) as client:
        index = (await client.get("/openapi/v3")).json()["paths"]
        assert set(index) == {"api/v1", *(f"apis/{r.api_version}" for r in RESOURCES if r.group)}
        url = index["apis/apps/v1"]["serverRelativeURL"]
        assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
        document = (await client.get(url)).json()
        assert (await client.get("/openapi/v2")).status_code == 404
    patch = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][0].items()
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    containers = document["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"
    ]
    assert containers["x-kubernetes-patch-merge-key"] == "name"


def test_strict_names_every_unknown_field_and_changes_nothing() -> None:
    body = copy.deepcopy(POD)
    with pytest.raises(ApiError) as refused:
        kube_openapi.decode(BY_PLURAL["pods"], body, "Strict")
    assert refused.value.code == 400
    assert refused.value.message == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].ports[0].bogus", unknown field "spec.nodeSelectr"'
    )
    assert body == POD


def test_warn_and_ignore_drop_unknown_fields_warn_says_so() -> None:
    warned, ignored = copy.deepcopy(POD), copy.deepcopy(POD)
    assert kube_openapi.decode(BY_PLURAL["pods"], warned, None) == [
        'unknown field "spec.containers[0].ports[0].bogus"',
        'unknown field "spec.nodeSelectr"',
    ]
    assert kube_openapi.decode(BY_PLURAL["pods"], ignored, "Ignore") == []
    for body in (warned, ignored):
        assert "nodeSelectr" not in body["spec"]
        assert body["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
        assert body["metadata"]["labels"] == {"a": "b"}  # maps keep any key


def test_patches_are_checked_but_their_directives_are_not_fields() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{"name": "c", "$patch": "delete"}],
            "terminationGracePeriodSecond": 5,
        }
    }
    with pytest.raises(ApiError, match=r'unknown field "spec.terminationGracePeriodSecond"$'):
        kube_openapi.decode(BY_PLURAL["pods"], patch, "Strict")
    with pytest.raises(ApiError, match="fieldValidation must be one of"):
        kube_openapi.decode(BY_PLURAL["pods"], {}, "strict-ish")


async def test_strict_over_http_is_a_400_and_warn_a_warning_header(kube_sim: KubeSim) -> None:
    path = "/api/v1/namespaces/default/pods"
    async with httpx.AsyncClient(base_url=kube_sim.url) as client:
        strict = await client.post(path, json=POD, params={"fieldValidation": "Strict"})
        assert strict.status_code == 400 and strict.json()["reason"] == "BadRequest"
        warned = await client.post(path, json=POD)
        assert warned.status_code == 201
        assert warned.headers.get_list("warning") == [
            '299 - "unknown field \\"spec.containers[0].ports[0].bogus\\""',
            '299 - "unknown field \\"spec.nodeSelectr\\""',
        ]
        assert "nodeSelectr" not in warned.json()["spec"]
