"""The manifests in deployments/: what a cluster admin applies, checked against the contract.

The contract is the seed README (probe paths, ports and timings, the Secret the API key comes
from, the annotations) plus least-privilege RBAC for exactly the calls the node makes. These
tests parse the YAML as kubectl would see it, so a mistyped value (``price-max: 0.30`` as a
float, a probe on the wrong port, a wildcard verb) fails here rather than in a cluster.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import trio
import yaml

from tests.seed import SEED_ANNOTATIONS
from vk_trio import config
from vk_trio.app import serve_node
from vk_trio.config import Settings
from vk_trio.devtools.sim.kube import SERVER_VERSION, KubeSim
from vk_trio.devtools.sim.vast import VastSim, VastSimConfig
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.kube.leader import lease_name
from vk_trio.kube.node import NodeConfig
from vk_trio.provider.requirements import (
    parse_requirements,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
VK_MANIFEST = DEPLOYMENTS / "virtual-kubelet-vast-python.yaml"
EXAMPLES = DEPLOYMENTS / "examples"
NAME = "virtual-kubelet-vast-python"
TAINT_KEY = "virtual-kubelet.io/provider"
TAINT_VALUE = "vast"
KUBERNETES_VERSION = "1.34"
"""The schemas the manifests are validated against (kubernetes-validate ships them): the
release the stand-in reports and the kubectl the suite drives."""

Obj = dict[str, Any]


def load(path: Path) -> list[Obj]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no documents"
    return docs


def all_manifests() -> list[Path]:
    return sorted(DEPLOYMENTS.rglob("*.yaml"))


def one(docs: list[Obj], kind: str, name: str = NAME) -> Obj:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def vk_docs() -> list[Obj]:
    return load(VK_MANIFEST)


@pytest.fixture(scope="module")
def vk_pod_spec(vk_docs: list[Obj]) -> Obj:
    spec: Obj = one(vk_docs, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def vk_container(vk_pod_spec: Obj) -> Obj:
    containers = vk_pod_spec["containers"]
    assert len(containers) == 1
    container: Obj = containers[0]
    return container


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env") or []}


# ----- every file ---------------------------------------------------------------------------


def test_the_seed_file_names_exist() -> None:
    assert VK_MANIFEST.is_file()
    assert (EXAMPLES / "gpu-services-deployment.yaml").is_file()


@pytest.mark.parametrize("path", all_manifests(), ids=lambda p: str(p.relative_to(DEPLOYMENTS)))
def test_every_document_is_a_named_kubernetes_object(path: Path) -> None:
    for doc in load(path):
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"]
        assert isinstance(doc.get("kind"), str) and doc["kind"]
        assert isinstance(doc["metadata"].get("name"), str) and doc["metadata"]["name"]


@pytest.mark.parametrize("path", all_manifests(), ids=lambda p: str(p.relative_to(DEPLOYMENTS)))
def test_every_document_validates_against_the_kubernetes_schema(path: Path) -> None:
    """Offline, against the OpenAPI-derived JSON schemas of the Kubernetes release the
    stand-in reports; strict, so a misspelt or misplaced field fails as well as a wrong type
    (the API server would drop an unknown field, or reject it under fieldValidation=Strict)."""
    for doc in load(path):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {where}: {error.message}")


def test_schemas_are_pinned_to_the_stand_ins_release() -> None:
    assert SERVER_VERSION["minor"] == KUBERNETES_VERSION.split(".")[1]


@pytest.mark.parametrize("path", all_manifests(), ids=lambda p: str(p.relative_to(DEPLOYMENTS)))
def test_workload_selectors_match_their_templates(path: Path) -> None:
    for doc in load(path):
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{doc['metadata']['name']}: selector misses"


# ----- the node's Deployment ----------------------------------------------------------------


def test_deployment_runs_two_replicas_that_elect_one_node_owner(
    vk_docs: list[Obj], vk_container: Obj
) -> None:
    deployment = one(vk_docs, "Deployment")
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert deployment["metadata"]["labels"]["app"] == NAME
    assert deployment["spec"]["replicas"] == 2
    # Two processes may run at once (the election picks the owner), so a rolling update is
    # safe; it must never leave fewer than the replicas that are there.
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    env = env_of(vk_container)
    assert env["LEADER_ELECT"]["value"] == "true"
    # The identity in the Lease is the pod's name; the Lease lives in the pod's namespace.
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    template = deployment["spec"]["template"]
    anti = template["spec"]["affinity"]["podAntiAffinity"]
    [term] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= (
        template["metadata"]["labels"].items()
    )


def test_a_disruption_budget_keeps_one_replica(vk_docs: list[Obj]) -> None:
    budget = one(vk_docs, "PodDisruptionBudget")
    deployment = one(vk_docs, "Deployment")
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    # With one replica of two ready, minAvailable 1 would allow no eviction at all: the
    # standby counts as ready (its /readyz is 200), and an unready pod never blocks a drain.
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_container_runs_the_image_entrypoint_unchanged(vk_container: Obj) -> None:
    assert vk_container["image"]
    # The image's ENTRYPOINT is ["/vk-trio", "run"]: args would be appended to `run`, and
    # a command would replace the node; settings come from the env.
    assert "command" not in vk_container
    assert "args" not in vk_container


def test_probes_hit_healthz_and_readyz_with_the_seed_timings(vk_container: Obj) -> None:
    readiness = vk_container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": 10255}
    assert (
        readiness["initialDelaySeconds"],
        readiness["periodSeconds"],
        readiness["timeoutSeconds"],
    ) == (20, 10, 3)
    liveness = vk_container["livenessProbe"]
    assert liveness["httpGet"] == {"path": "/healthz", "port": 10255}
    assert (
        liveness["initialDelaySeconds"],
        liveness["periodSeconds"],
        liveness["timeoutSeconds"],
    ) == (60, 30, 5)


def test_health_and_kubelet_ports_are_declared(vk_container: Obj) -> None:
    ports = {p["containerPort"]: p for p in vk_container["ports"]}
    assert set(ports) == {10255, 10250}
    assert all(p.get("protocol", "TCP") == "TCP" for p in ports.values())


def test_resources_are_the_seed_numbers(vk_container: Obj) -> None:
    resources = vk_container["resources"]
    assert resources["requests"] == {"cpu": "200m", "memory": "512Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "2Gi"}


def test_container_is_unprivileged_with_a_read_only_root(
    vk_pod_spec: Obj, vk_container: Obj
) -> None:
    pod_sc = vk_pod_spec.get("securityContext") or {}
    sc = vk_container["securityContext"]
    assert sc["runAsNonRoot"] is True
    run_as = sc.get("runAsUser", pod_sc.get("runAsUser"))
    assert isinstance(run_as, int) and run_as != 0
    assert run_as == 65532, "the image's USER; a different uid would not own /tmp's contents"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}
    assert not sc.get("privileged", False)


def test_tmp_is_a_writable_empty_dir(vk_pod_spec: Obj, vk_container: Obj) -> None:
    # The single-file binary unpacks itself under /tmp; the root filesystem is read-only.
    mounts = {m["mountPath"]: m for m in vk_container["volumeMounts"]}
    assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly", False)
    volumes = {v["name"]: v for v in vk_pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_vast_api_key_comes_from_the_secret_never_a_literal(vk_container: Obj) -> None:
    key = env_of(vk_container)["VAST_API_KEY"]
    assert "value" not in key
    assert key["valueFrom"] == {"secretKeyRef": {"name": "vast-api-secret", "key": "api-key"}}
    assert not vk_container.get("envFrom"), "only the one key is needed"


def test_pod_ip_and_node_name_reach_the_node(vk_container: Obj) -> None:
    env = env_of(vk_container)
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["NODE_NAME"]["value"] == "vast-gpu-node-python"
    # Every literal value is a string: Kubernetes rejects numbers and booleans in env.
    assert all(isinstance(e["value"], str) for e in env.values() if "value" in e)


def test_service_account_is_the_bound_one(vk_docs: list[Obj], vk_pod_spec: Obj) -> None:
    account = one(vk_docs, "ServiceAccount")
    assert account["metadata"]["namespace"] == "kube-system"
    assert vk_pod_spec["serviceAccountName"] == NAME
    assert vk_pod_spec.get("automountServiceAccountToken", True) is True
    assert 10 <= vk_pod_spec["terminationGracePeriodSeconds"] <= 60


# ----- RBAC ---------------------------------------------------------------------------------

# (role kind, role namespace, apiGroup, resource) -> verbs: exactly what the node calls.
EXPECTED_RBAC: dict[tuple[str, str | None, str, str], set[str]] = {
    ("ClusterRole", None, "", "pods"): {"get", "list", "watch", "patch", "delete"},
    ("ClusterRole", None, "", "pods/status"): {"patch"},
    ("ClusterRole", None, "", "nodes"): {"get", "create", "patch"},
    ("ClusterRole", None, "", "nodes/status"): {"patch"},
    ("ClusterRole", None, "", "events"): {"create", "patch"},
    ("ClusterRole", None, "", "secrets"): {"get"},
    ("ClusterRole", None, "", "configmaps"): {"get"},
    ("ClusterRole", None, "", "namespaces"): {"get", "patch"},
    ("ClusterRole", None, "", "services"): {"list", "watch"},
    ("ClusterRole", None, "discovery.k8s.io", "endpointslices"): {
        "list",
        "create",
        "update",
        "delete",
    },
    ("Role", "kube-node-lease", "coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("ClusterRole", None, "certificates.k8s.io", "certificatesigningrequests"): {"create", "get"},
    ("ClusterRole", None, "authentication.k8s.io", "tokenreviews"): {"create"},
    ("ClusterRole", None, "authorization.k8s.io", "subjectaccessreviews"): {"create"},
    ("Role", "kube-system", "coordination.k8s.io", "leases"): {"get", "create", "update"},
}
ELECTION_LEASE = "vk-trio-vast-gpu-node-python"


def rbac_rules(docs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                yield doc, rule


def test_rbac_grants_exactly_the_verbs_the_node_uses(vk_docs: list[Obj]) -> None:
    granted: dict[tuple[str, str | None, str, str], set[str]] = {}
    for role, rule in rbac_rules(vk_docs):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (role["kind"], role["metadata"].get("namespace"), group, resource)
                granted.setdefault(key, set()).update(rule["verbs"])
    assert granted == EXPECTED_RBAC


def test_rbac_has_no_wildcards_or_extra_reach(vk_docs: list[Obj]) -> None:
    for _, rule in rbac_rules(vk_docs):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        assert "nonResourceURLs" not in rule
        assert not any(v in ("escalate", "bind", "impersonate") for v in rule["verbs"])
        if {"secrets", "configmaps"} & set(rule["resources"]):
            # Reading by name only: list/watch would expose every Secret in the cluster.
            assert set(rule["verbs"]) == {"get"}


def test_lease_rights_are_namespaced_and_election_rights_name_their_lease(
    vk_docs: list[Obj],
) -> None:
    for role, rule in rbac_rules(vk_docs):
        if "leases" in rule["resources"]:
            assert role["kind"] == "Role"
            assert role["metadata"]["namespace"] in ("kube-node-lease", "kube-system")
            # Only the election Lease may be read or written in kube-system, where other
            # components keep theirs; create cannot be limited by name.
            if role["metadata"]["namespace"] == "kube-system" and rule["verbs"] != ["create"]:
                assert rule["resourceNames"] == [ELECTION_LEASE]


def test_every_role_is_bound_to_the_service_account(vk_docs: list[Obj]) -> None:
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in vk_docs}
    bindings = [d for d in vk_docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    bound = set()
    for binding in bindings:
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], namespace, ref["name"]) in roles, f"dangling roleRef {ref}"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": NAME, "namespace": "kube-system"}
        ]
        bound.add((ref["kind"], namespace, ref["name"]))
    assert {r for r in roles if r[0] in ("ClusterRole", "Role")} == bound


# Verbs implied by each HTTP method; GET is get or list by whether a name is in the path.
_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch", "WATCH": "watch"}
# Non-resource paths every authenticated user may read (the system:discovery ClusterRole).
_DISCOVERY = ("/api", "/apis", "/version", "/openapi")


def rbac_attributes(request: str) -> tuple[str, str, str, bool]:
    """``"PATCH /api/v1/namespaces/{namespace}/pods/{name}/status"`` as the authorizer sees
    it: (verb, apiGroup, resource[/subresource], namespaced)."""
    verb, group, resource, namespace, _ = rbac_request(request)
    return verb, group, resource, namespace is not None


def rbac_request(request: str) -> tuple[str, str, str, str | None, str | None]:
    """(verb, apiGroup, resource[/subresource], namespace, name) of a request with its real
    path (``"PUT /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x"``); a
    ``{placeholder}`` namespace or name is returned as it is."""
    method, path = request.split(" ", 1)
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), rest[2:]
    if method == "GET":
        verb = "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERB[method]
    return verb, group, "/".join([resource, *sub]), namespace, name


def allowed(
    docs: list[Obj],
    verb: str,
    group: str,
    resource: str,
    namespaced: bool,
    *,
    namespace: str | None = None,
    name: str | None = None,
) -> bool:
    """Whether a rule grants it; with ``namespace``/``name`` known, a Role must be in that
    namespace and ``resourceNames`` must list the name, as the authorizer checks."""
    for role, rule in rbac_rules(docs):
        if role["kind"] == "Role" and not namespaced:
            continue
        if role["kind"] == "Role" and namespace and role["metadata"]["namespace"] != namespace:
            continue
        if "resourceNames" in rule and (name is None or name not in rule["resourceNames"]):
            continue
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            return True
    return False


def example_pod_objects() -> list[Obj]:
    """The example pods as the scheduler would leave them: bound to the node, one per replica."""
    pods = []
    for _, meta, spec in EXAMPLE_PODS:
        name = meta.get("name") or f"{meta['labels']['app']}-abcde"
        metadata = {**meta, "name": name, "namespace": meta.get("namespace") or "default"}
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {**spec, "nodeName": "vast-gpu-node-python"},
            }
        )
    return pods


def example_services() -> list[Obj]:
    """The examples' Services (the ones vk-trio writes EndpointSlices for)."""
    return [
        d for path in sorted(EXAMPLES.glob("*.yaml")) for d in load(path) if d["kind"] == "Service"
    ]


async def test_rbac_allows_every_call_the_node_makes(vk_docs: list[Obj], tmp_path: Path) -> None:
    """Run the real node against the stand-ins through the examples' whole lifecycle (register,
    heartbeat, buy, Running with the examples' Services routed, delete, then a restart that
    re-adopts the Node) and authorize every request it made against the manifest's rules."""
    vast = VastSim(VastSimConfig(seed=7, boot_seconds=0.5, rate_limits="off"))
    kube = KubeSim(bookmark_interval=1.0)
    kubeconfig = tmp_path / "kubeconfig"
    pods = example_pod_objects()
    keys = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods]

    def phases(sim: KubeSim) -> list[str]:
        return [((sim.get("pods", *k) or {}).get("status") or {}).get("phase", "") for k in keys]

    lease_requests: list[str] = []

    async def recording(request: Request) -> Response:
        """The stand-in counts paths as templates; Lease RBAC depends on the real names."""
        if "/leases" in request.path:
            lease_requests.append(f"{request.method} {request.path}")
        return await kube.handle(request)

    with trio.fail_after(90):
        async with trio.open_nursery() as sims:
            vast_url = await sims.start(vast.serve)
            await sims.start(kube.serve)
            kube.url = await sims.start(functools.partial(serve_http, recording))
            kube.write_kubeconfig(kubeconfig)
            settings = Settings(
                vast_api_key="test-key",
                vast_api_url=vast_url,
                kubeconfig=str(kubeconfig),
                health_host="127.0.0.1",
                health_port=0,
                kubelet_host="127.0.0.1",
                kubelet_port=free_port(),
                poll_fast=0.2,
                poll_slow=1.0,
                pacing=0.0,
                # As the Deployment runs it: elected, the Lease in the pod's namespace.
                leader_elect=True,
                leader_elect_namespace="kube-system",
            )
            serve = functools.partial(serve_node, settings, kubelet_api=True)
            async with trio.open_nursery() as node:
                await node.start(serve)
                for obj in [*example_services(), *pods]:
                    namespace = obj["metadata"]["namespace"]
                    if kube.get("namespaces", None, namespace) is None:
                        kube.create({"kind": "Namespace", "metadata": {"name": namespace}})
                    kube.create(obj)
                await kube.wait_until(lambda s: bool(s.list("endpointslices")))
                await kube.wait_until(lambda s: all(p == "Running" for p in phases(s)))
                await use_the_kubelet_api(kube, settings.kubelet_port)
                for key in keys:
                    kube.delete("pods", *key, grace_seconds=30)
                await kube.wait_until(lambda s: all(s.get("pods", *k) is None for k in keys))
                await kube.wait_until(lambda s: not s.list("endpointslices"))
                node.cancel_scope.cancel()  # the node shuts down while the API still answers
            registered = kube.get("nodes", None, settings.node_name)
            async with trio.open_nursery() as node:  # a restart: the Node already exists
                await node.start(serve)
                node.cancel_scope.cancel()
            sims.cancel_scope.cancel()

    requests = [r for r in kube.requests if r.split(" ", 1)[1].startswith(("/api/v1/", "/apis/"))]
    others = set(kube.requests) - set(requests)
    assert all(r.split(" ", 1)[1].startswith(_DISCOVERY) for r in others), others
    assert requests, "the node made no API calls?"
    denied = [r for r in requests if not allowed(vk_docs, *rbac_attributes(r))]
    assert not denied, f"the RBAC in {VK_MANIFEST.name} would forbid: {denied}"
    # The Roles reach kube-node-lease (the heartbeat) and, in kube-system, the election
    # Lease by name: every Lease request must fall within them, namespace and name included.
    assert {
        (lease["metadata"]["namespace"], lease["metadata"]["name"]) for lease in kube.list("leases")
    } == {("kube-node-lease", settings.node_name), ("kube-system", ELECTION_LEASE)}
    assert {r.split(" ")[0] for r in lease_requests if "/kube-system/" in r} >= {"POST", "PUT"}
    for request in lease_requests:
        verb, group, resource, namespace, name = rbac_request(request)
        assert allowed(vk_docs, verb, group, resource, True, namespace=namespace, name=name), (
            f"the RBAC in {VK_MANIFEST.name} would forbid: {request}"
        )
    # Every granted verb is needed: it was used here, or it is one this run cannot reach.
    used = {rbac_attributes(r)[:3] for r in requests}
    granted = {
        (verb, group, resource)
        for (_, _, group, resource), verbs in EXPECTED_RBAC.items()
        for verb in verbs
    }
    assert granted - used <= NOT_EXERCISED, f"granted, never used: {granted - used}"

    # The examples land on the node as it registered itself: they tolerate its real taints
    # and their nodeSelector matches its real labels.
    assert registered is not None
    labels = registered["metadata"]["labels"]
    for pod in pods:
        spec = pod["spec"]
        assert spec["nodeSelector"].items() <= labels.items()
        for taint in registered["spec"].get("taints") or []:
            assert any(
                t["key"] == taint["key"]
                and t.get("effect") in (None, taint["effect"])
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                for t in spec["tolerations"]
            ), f"{pod['metadata']['name']} does not tolerate {taint}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def use_the_kubelet_api(kube: KubeSim, port: int) -> None:
    """Approve the node's serving CSR and call its kubelet API with a token: the CSR, token
    review and access review calls the node makes for that are then authorized too."""
    await kube.wait_until(lambda s: s.list("certificatesigningrequests"))
    [csr] = kube.list("certificatesigningrequests")
    kube.node_api.decide(csr["metadata"]["name"], approve=True)
    kube.node_api.add_token("rbac-test-token", "admin", ("system:masters",))
    context = ssl.create_default_context(cadata=kube.node_api.ca.cert_pem.decode())
    async with httpx.AsyncClient(verify=context) as client:
        while True:  # until the node serves the issued certificate
            try:
                response = await client.get(
                    f"https://127.0.0.1:{port}/healthz",
                    headers={"Authorization": "Bearer rbac-test-token"},
                )
                break
            except httpx.ConnectError:
                await trio.sleep(0.1)
    assert response.text == "ok"


# Granted verbs that a clean run cannot reach, and when the node needs them.
NOT_EXERCISED = {
    ("get", "", "pods"),  # re-reading one pod after a 409 Conflict on a patch
    ("patch", "", "events"),  # bumping the count of an Event repeated within its series
    ("get", "", "configmaps"),  # pods with configMapKeyRef/envFrom (none in the examples)
    ("patch", "", "namespaces"),  # holds in a namespace with a budget (none in the examples)
    # rewriting a slice when a pod's readiness or instance changes (tests/e2e/test_services.py)
    ("update", "discovery.k8s.io", "endpointslices"),
}


# ----- the examples -------------------------------------------------------------------------


def example_pods() -> list[tuple[str, Obj, Obj]]:
    """(file name, pod metadata, pod spec) for every Pod and Deployment template in examples."""
    pods = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in load(path):
            if doc["kind"] == "Pod":
                pods.append((path.name, doc["metadata"], doc["spec"]))
            elif doc["kind"] == "Deployment":
                template = doc["spec"]["template"]
                meta = {**template["metadata"], "namespace": doc["metadata"].get("namespace")}
                pods.append((path.name, meta, template["spec"]))
    return pods


EXAMPLE_PODS = example_pods()
EXAMPLE_IDS = [f"{file}:{meta.get('name', 'template')}" for file, meta, _ in EXAMPLE_PODS]


def test_examples_include_the_seed_workload() -> None:
    deployment = one(
        load(EXAMPLES / "gpu-services-deployment.yaml"), "Deployment", "june-gpu-services"
    )
    assert deployment["metadata"]["namespace"] == "june-services"
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["app"] == "june-gpu-services"
    assert template["metadata"]["annotations"] == SEED_ANNOTATIONS
    [container] = template["spec"]["containers"]
    assert container["name"] == "stt-tts"
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001}


@pytest.mark.parametrize(("file", "meta", "spec"), EXAMPLE_PODS, ids=EXAMPLE_IDS)
def test_example_pods_select_and_tolerate_the_virtual_node(file: str, meta: Obj, spec: Obj) -> None:
    assert spec["nodeSelector"] == {"type": "virtual-kubelet"}
    tolerated = [
        t
        for t in spec["tolerations"]
        if t["key"] == TAINT_KEY
        and t.get("effect") in (None, "NoSchedule")
        and (t.get("operator") == "Exists" or t.get("value") == TAINT_VALUE)
    ]
    assert tolerated, f"{file}: no toleration for {TAINT_KEY}={TAINT_VALUE}:NoSchedule"


@pytest.mark.parametrize(("file", "meta", "spec"), EXAMPLE_PODS, ids=EXAMPLE_IDS)
def test_example_annotations_are_strings_the_node_accepts(file: str, meta: Obj, spec: Obj) -> None:
    annotations = meta["annotations"]
    vast = {k: v for k, v in annotations.items() if k.startswith("vast.ai/")}
    assert vast, f"{file}: no vast.ai/ annotations"
    # Unquoted 0.30 would be a float and the API server would reject the object.
    assert all(isinstance(v, str) for v in annotations.values()), annotations
    [container] = spec["containers"]
    # Quoted as the API server returns it: the demo applies these files verbatim.
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert isinstance(gpus, str)
    requirements = parse_requirements(vast, gpu_limit=gpus)
    assert requirements.gpu_names[0] == vast["vast.ai/gpu-type"]
    assert requirements.price_max == float(vast["vast.ai/price-max"])


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_applies_on_its_own(path: Path) -> None:
    # Every namespaced object's Namespace is in the same file, so `kubectl apply -f` of one
    # file works on a fresh cluster (and the demo, which applies them in order, agrees).
    docs = load(path)
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in namespaces | {"default"}


def _term_matches(term: Obj, labels: dict[str, str]) -> bool:
    """One ``nodeSelectorTerm`` against a node's labels, as the scheduler evaluates it."""
    for expression in term.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


DAEMON_SETS = [
    doc
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in load(path)
    if doc["kind"] == "DaemonSet"
]


def test_examples_show_a_daemon_set_kept_off_the_virtual_node() -> None:
    assert DAEMON_SETS, "deployments/examples has no DaemonSet with the nodeAffinity"


@pytest.mark.parametrize("daemon_set", DAEMON_SETS, ids=lambda d: d["metadata"]["name"])
def test_daemon_set_affinity_excludes_the_virtual_node_only(daemon_set: Obj) -> None:
    """Even tolerating every taint, its pods schedule on ordinary nodes and never on the
    virtual one (judged by the labels the node really registers with)."""
    spec = daemon_set["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in spec["tolerations"], "the case the affinity is for"
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = required["nodeSelectorTerms"]
    virtual = NodeConfig(name="vast-gpu-node-python").all_labels()
    ordinary = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "worker-1"}
    assert not any(_term_matches(term, virtual) for term in terms)
    assert any(_term_matches(term, ordinary) for term in terms)


# ----- several nodes (examples/multi-node) ----------------------------------------------------

MULTI = EXAMPLES / "multi-node"


def _literal_env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def _node_of(deployment: Obj) -> tuple[str, dict[str, str], list[Obj]]:
    """(name, labels, taints) of the Node a node Deployment registers, computed as
    ``serve_node`` does from its settings (which must pass ``vk-trio run``'s checks)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    settings = config.load(None, _literal_env(container))
    node = NodeConfig(name=settings.node_name, labels=config.parse_labels(settings.node_labels))
    taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.taints]
    taints += [
        {"key": k, "value": v, "effect": e} for k, v, e in config.parse_taints(settings.node_taints)
    ]
    return settings.node_name, node.all_labels(), taints


def _fits(pod_spec: Obj, labels: dict[str, str], taints: list[Obj]) -> bool:
    """nodeSelector and NoSchedule/NoExecute taints, as the scheduler filters."""
    if not (pod_spec.get("nodeSelector") or {}).items() <= labels.items():
        return False
    return all(
        any(
            t["key"] == taint["key"]
            and t.get("effect") in (None, taint["effect"])
            and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
            for t in pod_spec.get("tolerations") or []
        )
        for taint in taints
        if taint["effect"] in ("NoSchedule", "NoExecute")
    )


def test_each_node_of_the_multi_node_example_is_elected_budgeted_and_guarded(
    vk_docs: list[Obj],
) -> None:
    docs = load(MULTI / "nodes.yaml")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 3
    account = one(vk_docs, "ServiceAccount")["metadata"]["name"]
    names = []
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = _literal_env(container)
        settings = config.load(None, env)  # NODE_LABELS, NODE_TAINTS... as the node checks them
        names.append(settings.node_name)
        assert settings.leader_elect and deployment["spec"]["replicas"] == 2
        assert settings.max_hourly_spend is not None and settings.max_hourly_spend > 0
        assert env_of(container)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.name"
        )
        assert spec["serviceAccountName"] == account  # the main manifest's RBAC
        budgets = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(budgets) == 1 and budgets[0]["spec"]["minAvailable"] == 1
    assert len(set(names)) == 3 and "vast-gpu-node-python" not in names
    # Their election Leases, by name, and nothing else in kube-system.
    [role] = [d for d in docs if d["kind"] == "Role"]
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert {n for rule in named for n in rule["resourceNames"]} == {lease_name(n) for n in names}
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account


def test_multi_node_workloads_land_on_their_pool_only() -> None:
    nodes = [_node_of(d) for d in load(MULTI / "nodes.yaml") if d["kind"] == "Deployment"]
    default = one(load(VK_MANIFEST), "Deployment")
    nodes.append(_node_of(default))  # the main manifest's node is there too
    placed = {}
    for doc in load(MULTI / "workloads.yaml"):
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        placed[doc["metadata"]["name"]] = sorted(
            name for name, labels, taints in nodes if _fits(spec, labels, taints)
        )
        for constraint in spec.get("topologySpreadConstraints") or []:
            # Spread over nodes, counting this workload's own pods.
            assert constraint["topologyKey"] == "kubernetes.io/hostname"
            assert constraint["labelSelector"]["matchLabels"].items() <= (
                doc["spec"]["template"]["metadata"]["labels"].items()
            )
    assert placed == {
        "inference": ["vast-gpu-team-a", "vast-gpu-team-b"],
        "batch": ["vast-gpu-spot"],
    }
