"""A simulated Vast.ai API (``vk-trio sim vast``); ``server`` says what it serves."""

from vk_trio.devtools.sim.vast.server import (
    Faults,
    VastSim,
    VastSimConfig,
    add_arguments,
    config_from_args,
    main,
)

__all__ = ["Faults", "VastSim", "VastSimConfig", "add_arguments", "config_from_args", "main"]
