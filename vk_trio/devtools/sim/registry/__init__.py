"""A simulated container registry (``vk-trio sim registry``); ``server`` says what it serves.

``images`` builds the stored documents (configs, manifests, an index), ``server`` routes,
authenticates and serves them, ``cli`` runs it as a process.
"""

from vk_trio.devtools.sim.registry.cli import add_arguments, main, sim_from_args
from vk_trio.devtools.sim.registry.images import BuiltImage, build_image
from vk_trio.devtools.sim.registry.server import RegistryFaults, RegistrySim

__all__ = [
    "BuiltImage",
    "RegistryFaults",
    "RegistrySim",
    "add_arguments",
    "build_image",
    "main",
    "sim_from_args",
]
