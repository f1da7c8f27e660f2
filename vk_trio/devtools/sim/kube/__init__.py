"""A Kubernetes API server stand-in (``vk-trio sim kube``); ``server`` says what it serves."""

from vk_trio.devtools.sim.kube.server import SERVER_VERSION, KubeSim, add_arguments, main

__all__ = ["SERVER_VERSION", "KubeSim", "add_arguments", "main"]
