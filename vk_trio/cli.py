"""The ``vk-trio`` command: ``run`` (the node), ``demo``, ``offers`` (dry run), ``sim vast|kube``.

Each subcommand lives in its own module, which offers ``add_arguments(parser)`` and
``main(args) -> int``; this file only wires them. Command modules keep their imports light
(the ``kubernetes`` package, the slow one, is imported only when a kubeconfig is loaded).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("vk_trio.app", "run the virtual node (the container's command)"),
    "demo": ("vk_trio.demo", "run the node against the built-in simulators, end to end"),
    "offers": ("vk_trio.dryrun", "show which offers a pod's annotations would buy; buys nothing"),
}
_SIMS: dict[str, tuple[str, str]] = {
    "vast": ("vk_trio.sim.vast", "serve a simulated Vast.ai API"),
    "kube": ("vk_trio.sim.kube", "serve a Kubernetes API stand-in"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vk-trio", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(module=module)
    sim = commands.add_parser("sim", help="run a simulator", description="run a simulator")
    sims = sim.add_subparsers(dest="sim", required=True, metavar="SIM")
    for name, (module, help_text) in _SIMS.items():
        sub = sims.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = importlib.import_module(args.module).main(args)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
