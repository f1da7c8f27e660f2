"""``vk-trio agent``: the instance's first process, configured by its environment only
(``settings.py``), with no flags: the node sets the instance's command and environment.

It logs to stderr, one short line per notable thing, because those lines are what
``vastai logs`` shows of the instance. It never logs an env value or the credentials, and
removes the credentials from its own environment before it starts anything.

The module stays light (``vk-trio --help`` imports every command's module): TLS, the runner
and the server load only when the agent runs.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio
from loguru import logger

from vk_trio.logs import configure_logging

__all__ = ["add_arguments", "main"]

DESCRIPTION = """\
Run a pod's processes inside its instance (the instance's command; not for use by hand).

Configured by its environment: VK_TRIO_LINK (the link's credentials, required),
VK_TRIO_AGENT_PORT (default 10250), VK_TRIO_AGENT_DIR (its state, default /.vk-trio),
VK_TRIO_AGENT_ROOT (where volumes are mounted, default /)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION


def main(args: argparse.Namespace) -> int:
    """Exit 2 with one line when the environment cannot work, 0 after SIGTERM."""
    from vk_trio.agent.app import run_agent
    from vk_trio.agent.link import CREDENTIALS_ENV
    from vk_trio.agent.settings import SettingsError, settings_from_env

    configure_logging("INFO", sink=sys.stderr, log_format="text")
    try:
        settings = settings_from_env(os.environ)
    except SettingsError as error:
        logger.error(str(error))
        return 2
    os.environ.pop(CREDENTIALS_ENV, None)
    trio.run(run_agent, settings)
    return 0
