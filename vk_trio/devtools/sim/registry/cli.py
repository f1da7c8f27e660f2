"""``vk-trio sim registry``: the registry simulator as a process; prints its URL once
listening.

``--image NAME:TAG=CONFIG.json`` adds a public image whose config is the JSON file (the OCI
image config's form, ``{"config": {"Entrypoint": [...], "Cmd": [...], ...}}``);
``--private-image`` the same in a private repository, pulled with ``--user USER:PASSWORD``.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import trio
from loguru import logger

from vk_trio.devtools.sim.registry.server import RegistrySim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``vk-trio sim registry``."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks one (default %(default)s)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME:TAG=CONFIG.json",
        help="serve a public image with this config (repeatable)",
    )
    parser.add_argument(
        "--private-image",
        action="append",
        default=[],
        metavar="NAME:TAG=CONFIG.json",
        help="serve an image in a private repository (repeatable; needs --user)",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="credentials that may pull private images (repeatable)",
    )
    parser.add_argument(
        "--auth",
        choices=("bearer", "basic", "none"),
        default="bearer",
        help="how the registry authenticates (default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="loguru level (default %(default)s)")


def parse_image(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME:TAG=CONFIG.json`` → (name, tag, the config document); raises ``ValueError``."""
    reference, equals, path = spec.partition("=")
    name, colon, tag = reference.rpartition(":")
    if not equals or not colon or not name or not tag or "/" in tag:
        raise ValueError(f"--image {spec!r}: expected NAME:TAG=CONFIG.json")
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict):
        raise ValueError(f"--image {spec!r}: {path} is not a JSON object")
    return name, tag, document


def sim_from_args(args: argparse.Namespace) -> RegistrySim:
    """The simulator the flags describe (raises ``ValueError``/``OSError`` on bad ones)."""
    users = {}
    for pair in args.user:
        user, colon, password = pair.partition(":")
        if not colon or not user or not password:
            raise ValueError(f"--user {pair!r}: expected USER:PASSWORD")
        users[user] = password
    if args.private_image and not users:
        raise ValueError("--private-image needs --user, or nobody could pull it")
    sim = RegistrySim(users=users, auth=args.auth)
    for spec in args.image:
        sim.add_image(*parse_image(spec))
    for spec in args.private_image:
        sim.add_image(*parse_image(spec), private=True)
    return sim


def main(args: argparse.Namespace) -> int:
    """Run the simulator until interrupted; prints its URL on stdout once listening."""
    from vk_trio.logs import configure_logging

    configure_logging(args.log_level)
    host, _, port = args.listen.rpartition(":")
    try:
        sim = sim_from_args(args)
    except (ValueError, OSError) as exc:
        logger.error("registry sim: bad configuration", error=str(exc))
        return 2
    trio.run(_serve_and_announce, sim, host or "127.0.0.1", int(port or 0))
    return 0


async def _serve_and_announce(sim: RegistrySim, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(sim.serve, host=host, port=port))
        print(url, flush=True)
