"""``kubectl apply -f`` of every manifest in deployments/ against the Kubernetes stand-in.

What a cluster admin does with these files, with the real kubectl: discovery maps each kind
to its resource (RBAC and apps kinds included), ``apply`` GETs each object, POSTs the new
ones with the last-applied annotation, and on a second run computes a three-way strategic
merge patch. The objects are then read back with ``kubectl get`` and must hold what the file
says. kubectl's validation stays on (its default, ``--validate=strict``): it reads the
stand-in's OpenAPI and has the server reject unknown fields, as a real one does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.kube_sim import KUBECTL, Kubectl, KubectlResult
from vk_trio.devtools.sim.kube import KubeSim

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

DEPLOYMENTS = Path(__file__).resolve().parents[4] / "deployments"
MANIFESTS = sorted(DEPLOYMENTS.rglob("*.yaml"))
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

Obj = dict[str, Any]


def documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def contains(stored: Any, applied: Any) -> bool:
    """Whether the server's object holds everything the file said. The server may add to it
    (defaults; the pod defaulting appends tolerations), never drop or change a value."""
    if isinstance(applied, dict):
        return isinstance(stored, dict) and all(
            key in stored and contains(stored[key], value) for key, value in applied.items()
        )
    if isinstance(applied, list):
        return (
            isinstance(stored, list)
            and len(stored) >= len(applied)
            and all(contains(s, a) for s, a in zip(stored, applied, strict=False))
        )
    return bool(stored == applied)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOYMENTS)))
async def test_apply_creates_every_object_and_get_reads_it_back(
    path: Path, kubectl: Kubectl
) -> None:
    docs = documents(path)
    created = (await kubectl("apply", "-f", str(path))).splitlines()
    # Namespaces the stand-in starts with (kube-system...) would say "unchanged"; none of
    # the files creates one of those.
    assert len(created) == len(docs) and all(line.endswith(" created") for line in created)

    listed = json.loads(await kubectl("get", "-f", str(path), "-o", "json"))
    items = listed["items"] if listed.get("kind") == "List" else [listed]
    assert len(items) == len(docs)
    for doc, item in zip(docs, items, strict=True):
        name = f"{doc['kind']} {doc['metadata']['name']}"
        assert (item["apiVersion"], item["kind"]) == (doc["apiVersion"], doc["kind"]), name
        # kubectl records the file as applied (plus its own empty annotations map).
        applied = json.loads(item["metadata"]["annotations"][LAST_APPLIED])
        assert contains(applied, doc), f"{name}: last-applied differs from the file"
        for field, value in doc.items():
            assert contains(item.get(field), value), f"{name}: .{field} not as applied"

    # A second apply of the unchanged file writes nothing. kubectl may still send a patch
    # (a pod's tolerations list is replaced whole, then admission adds the defaults back,
    # as on a real cluster: it prints "configured"), but no object changes.
    versions = [item["metadata"]["resourceVersion"] for item in items]
    await kubectl("apply", "-f", str(path))
    again = json.loads(await kubectl("get", "-f", str(path), "-o", "json"))
    again_items = again["items"] if again.get("kind") == "List" else [again]
    assert [item["metadata"]["resourceVersion"] for item in again_items] == versions


async def test_reapply_patches_the_node_deployment_and_bumps_its_generation(
    kube_sim: KubeSim, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An edited manifest re-applied: kubectl sends a strategic merge patch of the change
    alone; the stand-in merges containers by name and counts the spec's generation up."""
    manifest = DEPLOYMENTS / "virtual-kubelet-vast-python.yaml"
    await kubectl("apply", "-f", str(manifest))
    edited = manifest.read_text().replace("ghcr.io/vk-trio/vk-trio:0.1.0", "example/vk:0.2.0")
    assert edited != manifest.read_text()
    (tmp_path / "edited.yaml").write_text(edited)

    output = await kubectl("apply", "-f", str(tmp_path / "edited.yaml"))
    assert "deployment.apps/virtual-kubelet-vast-python configured" in output
    assert "clusterrole.rbac.authorization.k8s.io/virtual-kubelet-vast-python unchanged" in output
    patches = [r for r in kube_sim.requests if r.startswith("PATCH ")]
    # kubectl always re-sends a PodDisruptionBudget's selector (its patch strategy is
    # "replace"); the object does not change.
    assert sorted(patches) == [
        "PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "PATCH /apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
    ]

    deployment = kube_sim.get("deployments", "kube-system", "virtual-kubelet-vast-python")
    assert deployment is not None
    assert deployment["metadata"]["generation"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example/vk:0.2.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # merged, not replaced
    table = await kubectl("get", "deployments", "-n", "kube-system", "-o", "wide")
    assert "example/vk:0.2.0" in table and "0/2" in table


async def test_a_wrong_field_is_rejected_unless_validation_is_off(
    kube_sim: KubeSim, kubectl_result: KubectlResult, tmp_path: Path
) -> None:
    """A typo in a field name fails ``kubectl apply`` with the real server's message and
    creates nothing; with ``--validate=false`` the field is dropped, as a real server drops it."""
    text = (DEPLOYMENTS / "examples" / "pod-minimal.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("      image: nvidia", "      imagePullPolicyy: Always\n      image: nvidia")
    )
    code, _, error = await kubectl_result("apply", "-f", str(bad))
    assert code == 1
    assert (
        'Error from server (BadRequest): error when creating "' in error
        and 'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagePullPolicyy"'
        in error
    ), error
    assert kube_sim.get("pods", "default", "gpu-smoke") is None

    code, _, error = await kubectl_result("apply", "--validate=warn", "-f", str(bad))
    assert code == 0 and 'Warning: unknown field "spec.containers[0].imagePullPolicyy"' in error
    [container] = kube_sim.get("pods", "default", "gpu-smoke")["spec"]["containers"]  # type: ignore[index]
    assert "imagePullPolicyy" not in container and container["imagePullPolicy"] == "IfNotPresent"
