"""The vk-trio agent as the simulator's instances download it (``GET /vk-trio/agent``).

The node's ``--agent-url`` points here in the tests and the demo, so the instance's bootstrap
downloads, checks and runs a real agent. Run as the static binary, the simulator serves that
very binary (the agent *is* vk-trio). Run from a checkout, it serves a two-line ``sh`` script
that starts this interpreter on this checkout, which the sandbox binds read-only at the same
paths (``sandbox.python_binds``).
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path

import vk_trio

__all__ = ["AGENT_PATH", "agent_bytes"]

AGENT_PATH = "/vk-trio/agent"


@functools.cache
def agent_bytes() -> bytes:
    """What ``AGENT_PATH`` serves (read once: the binary does not change under us)."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).read_bytes()
    checkout = os.path.dirname(os.path.dirname(vk_trio.__file__))
    return (
        "#!/bin/sh\n"
        f'PYTHONPATH={shlex.quote(checkout)} exec {shlex.quote(sys.executable)} -m vk_trio "$@"\n'
    ).encode()
