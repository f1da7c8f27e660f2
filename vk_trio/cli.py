"""The ``vk-trio`` command: ``run`` (the node), ``demo``, ``offers`` (dry run), ``spend``,
``bench``, ``sim``, and ``agent`` (inside each instance).

Each subcommand lives in its own module, which offers ``add_arguments(parser)`` and
``main(args) -> int``; this file only wires them. Command modules keep their imports light
(the ``kubernetes`` package, the slow one, is imported only when a kubeconfig is loaded).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

DESCRIPTION = """\
vk-trio: a Kubernetes virtual node that runs GPU pods on Vast.ai instances.

Pods scheduled onto the node get an instance rented for them, chosen by their vast.ai/*
annotations (GPU type, price cap, region...); deleting a pod destroys its instance.

Start with `vk-trio demo` (no cloud account, no cluster: everything runs on the built-in
simulators), then `vk-trio offers` to see what a pod would rent. `vk-trio run` is the node
itself, as the container runs it."""

EPILOG = "Run `vk-trio COMMAND --help` for a command's options and their defaults."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their paragraphs; every option with a default says what it is.

    Options without one (``None``, ``[]``, or ``False`` for a switch) show nothing, rather
    than argparse's "(default: None)"; help that already names its default is left alone.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is None
            or action.default is False
            or action.default in ([], argparse.SUPPRESS)
            or "default" in text
        ):
            return text
        return text + " (default: %(default)s)"


_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("vk_trio.app", "run the virtual node (the container's command)"),
    "demo": ("vk_trio.devtools.demo", "run the node against the built-in simulators, end to end"),
    "offers": ("vk_trio.dryrun", "show which offers a pod's annotations would buy; buys nothing"),
    "spend": (
        "vk_trio.spend",
        "what the pods' instances cost, by namespace and pod, over a period",
    ),
    "bench": (
        "vk_trio.devtools.bench",
        "N pods at once on the real node process and simulators, measured",
    ),
    "agent": ("vk_trio.agent.main", "run a pod's processes inside its instance (its command)"),
}
_SIMS: dict[str, tuple[str, str]] = {
    "vast": ("vk_trio.devtools.sim.vast", "serve a simulated Vast.ai API"),
    "kube": ("vk_trio.devtools.sim.kube", "serve a Kubernetes API stand-in"),
    "registry": ("vk_trio.devtools.sim.registry", "serve a container registry on loopback"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vk-trio", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        sub = commands.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(module=module)
    sim = commands.add_parser(
        "sim",
        help="run a simulator",
        description="Run a simulator on its own, e.g. to point `vk-trio run` or kubectl at it.",
        formatter_class=HelpFormatter,
    )
    sims = sim.add_subparsers(dest="sim", required=True, metavar="SIM")
    for name, (module, help_text) in _SIMS.items():
        sub = sims.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
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
