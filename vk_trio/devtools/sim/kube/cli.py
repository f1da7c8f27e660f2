"""``vk-trio sim kube``: the stand-in as a process; prints its URL once listening."""

from __future__ import annotations

import argparse
import functools
import signal
from pathlib import Path

import trio
from loguru import logger

from vk_trio.devtools.sim.kube.server import CONTEXT, KubeSim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free one (default %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig-out",
        type=Path,
        metavar="PATH",
        help=f"write a kubeconfig (context {CONTEXT!r}) pointing at the stand-in",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=1000,
        help="changes kept for watches; older resourceVersions get 410 (default %(default)s)",
    )
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=5.0,
        help="seconds between watch BOOKMARK events (default %(default)s)",
    )
    parser.add_argument(
        "--allow-loopback-endpoints",
        action="store_true",
        help="accept EndpointSlices naming 127.0.0.1, which a real API server refuses "
        "(for Services over `vk-trio sim vast --serve-ports`)",
    )


def main(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (a normal stop: exit code 0); print the URL once listening.

    SIGINT is received explicitly (as ``vk-trio demo`` does) rather than left to Python's
    KeyboardInterrupt: a process started from a shell's background job inherits SIGINT
    ignored, and Python then never turns it into KeyboardInterrupt, so Ctrl-C (or a test's
    SIGINT) would not stop it.
    """
    host, _, port = str(args.listen).rpartition(":")
    sim = KubeSim(
        history=args.history,
        bookmark_interval=args.bookmark_interval,
        allow_loopback_endpoints=args.allow_loopback_endpoints,
    )

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(
                    functools.partial(sim.serve, host=host or "127.0.0.1", port=int(port))
                )
                if args.kubeconfig_out is not None:
                    sim.write_kubeconfig(args.kubeconfig_out)
                    logger.info("kubeconfig written", path=str(args.kubeconfig_out))
                print(url, flush=True)
                async for _ in interrupts:
                    logger.info("kube stand-in stopping (SIGINT)")
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run)
    except KeyboardInterrupt:  # before the receiver is installed
        pass
    except BaseExceptionGroup as group:
        # Ctrl-C arrives wrapped in the nurseries' exception groups; anything else is a crash.
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise rest from None
    return 0
