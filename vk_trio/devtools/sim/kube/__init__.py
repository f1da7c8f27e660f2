"""A Kubernetes API server stand-in (``vk-trio sim kube``); ``server`` says what it serves.

Its parts: ``server`` (``KubeSim``: routes, list, watch), ``wire`` (URLs, bodies, selectors,
pages, watch events), ``discovery``, ``store`` (objects, resourceVersions, watches), ``kinds``,
``patch``, ``selector``, ``openapi``, ``table``, ``controllers`` and ``workloads`` (scheduler,
garbage collector, ReplicaSets, Deployments), ``scheduler``, ``node_api`` and ``pki`` (the
kubelet API's side of the API server) and ``cli`` (``vk-trio sim kube``).
"""

from vk_trio.devtools.sim.kube.cli import add_arguments, main
from vk_trio.devtools.sim.kube.discovery import SERVER_VERSION
from vk_trio.devtools.sim.kube.server import KubeSim

__all__ = ["SERVER_VERSION", "KubeSim", "add_arguments", "main"]
