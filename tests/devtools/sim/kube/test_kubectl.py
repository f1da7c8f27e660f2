"""The real ``kubectl`` against the Kubernetes API stand-in.

Scope: the commands a user of the demo types (get/describe nodes and pods, create, delete,
events), run as subprocesses with a kubeconfig written by the sim and a throwaway ``HOME`` so
kubectl's discovery cache stays inside the test. Assertions are on kubectl's printed output,
which for ``get`` comes from the sim's Table responses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.plugins.kube_sim import KUBECTL, Kubectl
from vk_trio.devtools.sim.kube import KubeSim

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "vk-node",
        "labels": {"type": "virtual-kubelet", "kubernetes.io/role": "agent"},
    },
    "spec": {
        "taints": [{"key": "virtual-kubelet.io/provider", "value": "vast", "effect": "NoSchedule"}]
    },
    "status": {
        "capacity": {"cpu": "20", "memory": "100Gi", "pods": "20", "nvidia.com/gpu": "8"},
        "allocatable": {"cpu": "20", "memory": "100Gi", "pods": "20", "nvidia.com/gpu": "8"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
        "nodeInfo": {"kubeletVersion": "v1.31.0-vk-trio", "operatingSystem": "linux"},
    },
}


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "vk-node", "containers": [{"name": "main", "image": "busybox"}]},
    }


def set_status(sim: KubeSim, name: str, status: dict[str, Any]) -> None:
    smp = "application/strategic-merge-patch+json"
    sim.patch("pods", "default", name, {"status": status}, content_type=smp, subresource="status")


def rows(output: str) -> list[list[str]]:
    """kubectl's table output as lists of cells (cells never contain two spaces here)."""
    return [
        [cell.strip() for cell in line.split("  ") if cell.strip()] for line in output.splitlines()
    ]


@pytest.fixture
def cluster(kube_sim: KubeSim) -> KubeSim:
    """A node that is Ready, a running pod, a pod waiting for offers, and an event."""
    kube_sim.create(NODE)
    kube_sim.create(pod("running"))
    set_status(
        kube_sim,
        "running",
        {
            "phase": "Running",
            "podIP": "10.9.8.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "main", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    )
    waiting = kube_sim.create(pod("waiting"))
    set_status(
        kube_sim,
        "waiting",
        {"containerStatuses": [{"name": "main", "state": {"waiting": {"reason": "NoOffers"}}}]},
    )
    kube_sim.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "waiting.1", "namespace": "default"},
            "involvedObject": {
                "kind": "Pod",
                "namespace": "default",
                "name": "waiting",
                "uid": waiting["metadata"]["uid"],
            },
            "reason": "NoOffers",
            "message": "no offers match the pod's requirements",
            "type": "Warning",
            "source": {"component": "vk-trio", "host": "vk-node"},
            "firstTimestamp": waiting["metadata"]["creationTimestamp"],
            "lastTimestamp": waiting["metadata"]["creationTimestamp"],
            "count": 1,
        }
    )
    return kube_sim


async def test_get_nodes(cluster: KubeSim, kubectl: Kubectl) -> None:
    header, node = rows(await kubectl("get", "nodes"))
    assert header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert node[:3] == ["vk-node", "Ready", "agent"]
    assert node[4] == "v1.31.0-vk-trio"


async def test_get_pods_wide_and_all_namespaces(cluster: KubeSim, kubectl: Kubectl) -> None:
    header, *pods = rows(await kubectl("get", "pods", "-o", "wide"))
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    by_name = {row[0]: row for row in pods}
    assert by_name["running"][1:4] == ["1/1", "Running", "0"]
    assert by_name["running"][5:7] == ["10.9.8.7", "vk-node"]
    assert by_name["waiting"][1:3] == ["0/1", "NoOffers"]
    header, *pods = rows(await kubectl("get", "pods", "-A"))
    assert header[:2] == ["NAMESPACE", "NAME"]
    assert {(row[0], row[1]) for row in pods} == {("default", "running"), ("default", "waiting")}


async def test_describe_pod_shows_its_events(cluster: KubeSim, kubectl: Kubectl) -> None:
    output = await kubectl("describe", "pod", "waiting")
    assert "Node:             vk-node/" in output
    events = output.split("Events:")[1]
    assert "Warning  NoOffers" in events
    assert "no offers match the pod's requirements" in events


async def test_get_events(cluster: KubeSim, kubectl: Kubectl) -> None:
    header, event = rows(await kubectl("get", "events"))
    assert header == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert event[1:] == [
        "Warning",
        "NoOffers",
        "pod/waiting",
        "no offers match the pod's requirements",
    ]


async def test_describe_node(cluster: KubeSim, kubectl: Kubectl) -> None:
    output = await kubectl("describe", "node", "vk-node")
    assert "Roles:              agent" in output
    assert "virtual-kubelet.io/provider=vast:NoSchedule" in output
    assert "InternalIP:  10.1.2.3" in output
    assert "nvidia.com/gpu:" in output
    assert "Non-terminated Pods:          (2 in total)" in output


async def test_create_get_json_and_graceful_delete(
    kube_sim: KubeSim, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\nspec:\n  nodeName: vk-node\n"
        "  containers:\n  - name: main\n    image: pytorch/pytorch:2.3.0\n"
    )
    assert (await kubectl("create", "-f", str(manifest))).strip() == ("pod/job created")
    created = json.loads(await kubectl("get", "pod", "job", "-o", "json"))
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    deleted = await kubectl("delete", "pod", "job", "--wait=false")
    # kubectl's wording varies by release (1.36 adds "from default namespace"): what is
    # pinned is the pod named as deleted, and then Terminating (a graceful delete).
    assert deleted.startswith('pod "job" deleted'), deleted
    _, row = rows(await kubectl("get", "pod", "job"))
    assert row[2] == "Terminating"
    kube_sim.delete("pods", "default", "job", grace_seconds=0, uid=created["metadata"]["uid"])
    assert kube_sim.get("pods", "default", "job") is None


async def test_apply_twice_then_label(kube_sim: KubeSim, kubectl: Kubectl, tmp_path: Path) -> None:
    """``apply`` needs GET, POST, then a strategic merge PATCH (no OpenAPI: static schema)."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(json.dumps(pod("applied")))
    assert "created" in await kubectl("apply", "-f", str(manifest))
    changed = {**pod("applied"), "metadata": {**pod("applied")["metadata"], "labels": {"a": "1"}}}
    manifest.write_text(json.dumps(changed))
    assert "configured" in await kubectl("apply", "-f", str(manifest))
    await kubectl("label", "pod", "applied", "b=2")
    stored = kube_sim.get("pods", "default", "applied")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"a": "1", "b": "2"}


async def test_get_pods_watch_streams_table_rows(
    cluster: KubeSim, kubeconfig: Path, tmp_path: Path
) -> None:
    """``kubectl get pods -w``: a Table list, then a watch whose events are one-row Tables."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    command = ["kubectl", "get", "pods", "-w"]
    process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(20):
            while output.count(b"\n") < 3:  # the header and the two pods
                output += await process.stdout.receive_some()
            cluster.delete("pods", "default", "running")
            while b"Terminating" not in output:
                output += await process.stdout.receive_some()
    finally:
        process.kill()
        await process.wait()
    assert rows(output.decode())[-1][:3] == ["running", "1/1", "Terminating"]


CLI = """
import argparse, sys
from vk_trio.devtools.sim import kube
parser = argparse.ArgumentParser()
kube.add_arguments(parser)
sys.exit(kube.main(parser.parse_args(sys.argv[1:])))
"""


def _sigint(disposition: signal.Handlers) -> Callable[[], None]:
    """A child's ``preexec_fn``: start it with SIGINT at ``disposition``."""

    def preexec() -> None:
        signal.signal(signal.SIGINT, disposition)

    return preexec


@pytest.mark.parametrize(
    "sigint",
    [signal.SIG_DFL, signal.SIG_IGN],
    # A shell without job control starts background jobs with SIGINT ignored (POSIX), and
    # their children inherit that: a suite run as `pytest ... &` must still pass.
    ids=["from-a-terminal", "inherited-ignored"],
)
async def test_cli_serves_and_writes_a_kubeconfig(tmp_path: Path, sigint: signal.Handlers) -> None:
    """``vk-trio sim kube`` (its module, without the rest of the CLI): prints the URL once
    listening, writes a kubeconfig kubectl can use, and exits 0 on Ctrl-C, whatever SIGINT's
    disposition it inherited. Start-up (imports, on a loaded machine) has its own budget: the
    one after Ctrl-C measures the stop alone."""
    config = tmp_path / "kubeconfig"
    command = [sys.executable, "-c", CLI, "--kubeconfig-out", str(config)]
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path)}
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, preexec_fn=_sigint(sigint)
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(120):
            output = b""
            while not output.endswith(b"\n"):
                output += await process.stdout.receive_some()
            assert output.decode().startswith("http://127.0.0.1:")
            listed = await trio.run_process(
                ["kubectl", "get", "namespaces"], env=env, capture_stdout=True
            )
            assert "kube-node-lease" in listed.stdout.decode()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        process.kill()
