"""``vk-trio sim vast``: the simulator as a process; prints its URL once listening."""

from __future__ import annotations

import argparse
import functools
import os

import msgspec
import trio
from loguru import logger

from vk_trio.devtools.sim.vast.config import Faults, VastSimConfig, rate_factor
from vk_trio.devtools.sim.vast.images import load_image_config
from vk_trio.devtools.sim.vast.server import VastSim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``vk-trio sim vast``."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks one (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="marketplace and fault seed")
    parser.add_argument(
        "--boot-seconds",
        type=float,
        default=3.0,
        help="seconds from create to running (default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=None, help="the only API key accepted (default: any non-empty key)"
    )
    parser.add_argument(
        "--rate-limits",
        default="real",
        metavar="real|off|FACTOR",
        help="real intervals, none, or the real ones times FACTOR",
    )
    parser.add_argument(
        "--offers",
        default=None,
        metavar="PATH",
        help="JSON list of offers to serve instead of the seeded market",
    )
    parser.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help='initial faults, e.g. \'{"rate_429": 0.1, "oci_failure": 0.05}\'',
    )
    parser.add_argument(
        "--serve-ports",
        action="store_true",
        help="answer HTTP on each running instance's mapped ports, at 127.0.0.1",
    )
    parser.add_argument(
        "--app-ready-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --serve-ports: answer 503 for this long after running, then 200",
    )
    parser.add_argument(
        "--run-containers",
        action="store_true",
        help="run each instance's process ([onstart, *args]) for real in a rootless sandbox "
        "(util-linux unshare, user namespaces); its output is the log, its mapped ports reach it",
    )
    parser.add_argument(
        "--reach",
        action="append",
        type=int,
        default=[],
        metavar="PORT",
        help="with --run-containers: the sandboxes reach 127.0.0.1:PORT of the host too, e.g. a "
        "registry simulator (repeatable)",
    )
    parser.add_argument(
        "--serve-file",
        action="append",
        default=[],
        metavar="URLPATH=FILE",
        help="answer GET URLPATH with FILE's bytes (repeatable), e.g. for a bootstrap to fetch",
    )
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="with --run-containers: instances whose image is NAME (any tag if NAME has none) "
        "run with DIR as their root filesystem, read-only, instead of the host's (repeatable)",
    )
    parser.add_argument(
        "--image-config",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="the OCI config (Entrypoint, Cmd, Env, WorkingDir, User) of image NAME, as JSON "
        '{"config": {...}}; default: DIR/.vk-trio-image-config.json of its root (repeatable)',
    )
    parser.add_argument("--log-level", default="INFO", help="loguru level (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> VastSimConfig:
    """The ``VastSimConfig`` the flags describe (raises ``ValueError`` on bad values)."""
    rate_factor(args.rate_limits)
    faults = msgspec.json.decode(args.faults, type=Faults) if args.faults else Faults()
    return VastSimConfig(
        seed=args.seed,
        boot_seconds=args.boot_seconds,
        api_key=args.api_key,
        rate_limits=args.rate_limits,
        offers_path=args.offers,
        faults=faults,
        serve_ports=args.serve_ports,
        app_ready_after=args.app_ready_after,
        run_containers=args.run_containers,
        reachable=list(args.reach),
        serve_files=dict(_served_file(spec) for spec in args.serve_file),
        image_roots=dict(_image_root(spec) for spec in args.image_root),
        image_configs=dict(_image_config(spec) for spec in args.image_config),
    )


def _served_file(spec: str) -> tuple[str, str]:
    """``URLPATH=FILE`` → ``("/URLPATH", FILE)`` (``ValueError`` without both)."""
    url_path, sep, file = spec.partition("=")
    if not sep or not url_path.strip("/") or not file:
        raise ValueError(f"--serve-file wants URLPATH=FILE, not {spec!r}")
    return "/" + url_path.lstrip("/"), file


def _named(spec: str, flag: str, what: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"{flag} wants NAME={what}, not {spec!r}")
    return name, path


def _image_root(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` (``ValueError`` unless DIR is a directory); DIR made absolute."""
    name, path = _named(spec, "--image-root", "DIR")
    if not os.path.isdir(path):
        raise ValueError(f"--image-root {spec!r}: {path} is not a directory")
    return name, os.path.abspath(path)


def _image_config(spec: str) -> tuple[str, str]:
    """``NAME=FILE``, checked now: a bad file is a startup error, not a failed instance."""
    name, path = _named(spec, "--image-config", "FILE")
    load_image_config(path)
    return name, os.path.abspath(path)


def main(args: argparse.Namespace) -> int:
    """Run the simulator until interrupted; prints its URL on stdout once listening."""
    from vk_trio.logs import configure_logging

    configure_logging(args.log_level)
    host, _, port = args.listen.rpartition(":")
    try:
        sim = VastSim(config_from_args(args))
    except (ValueError, msgspec.ValidationError, OSError) as exc:
        logger.error("vast sim: bad configuration", error=str(exc))
        return 2
    trio.run(_serve_and_announce, sim, host or "127.0.0.1", int(port or 0))
    return 0


async def _serve_and_announce(sim: VastSim, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(sim.serve, host=host, port=port))
        print(url, flush=True)
