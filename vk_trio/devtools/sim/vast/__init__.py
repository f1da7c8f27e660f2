"""A simulated Vast.ai API (``vk-trio sim vast``); ``server`` says what it serves.

The parts of ``VastSim``, by concern: ``state`` (what it holds, how time moves it), ``offers``
(search), ``instances`` (create, list, show, modify, destroy), ``logs``, ``apps`` (the
instances' ports), ``containers`` (``run_containers``: each instance's process run for real,
in a ``sandbox`` whose pid 1 is ``launcher``), ``faults``, ``control`` (the test surface),
``server`` (routing, auth, rate limits, the HTTP server) and ``cli`` (``vk-trio sim vast``).
"""

from vk_trio.devtools.sim.vast.cli import add_arguments, config_from_args, main
from vk_trio.devtools.sim.vast.config import Faults, VastSimConfig
from vk_trio.devtools.sim.vast.server import VastSim

__all__ = ["Faults", "VastSim", "VastSimConfig", "add_arguments", "config_from_args", "main"]
