"""Image root filesystems for the Vast simulator's ``--image-root``, made from what a machine
has: no registry pull, no root, no Docker.

- :func:`busybox_root`: a static ``busybox`` as ``/bin/busybox`` and every applet it lists
  as a ``/bin`` link to it (``sh``, ``wget``, ``env``...): a shell and a downloader, so the
  vk-trio bootstrap can fetch and run the agent in it, like a small real image;
- :func:`single_binary_root`: one binary at one path and nothing else, no ``/bin/sh``: a
  "distroless" image, where a create with ``onstart: "sh"`` fails as on Vast.

The busybox must be statically linked (the root holds no C library): Debian's
``busybox-static`` (``apt-get install busybox-static``, or without root ``apt-get download
busybox-static && dpkg-deb -x busybox-static_*.deb DIR``, then ``DIR/bin/busybox``).
``python -m vk_trio.devtools.images busybox DIR`` makes a busybox root from the shell.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vk_trio.devtools.sim.vast.images import IMAGE_CONFIG_FILE

__all__ = ["busybox_root", "find_busybox", "is_static", "single_binary_root", "write_config"]

BUSYBOX_PLACES = ("/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox")
PT_INTERP = 3
"""ELF program header type naming the dynamic loader: present in every dynamic binary."""


def is_static(path: str | Path) -> bool:
    """Whether ``path`` is a 64-bit little-endian ELF with no dynamic loader (``PT_INTERP``)."""
    try:
        with open(path, "rb") as file:
            header = file.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            (phoff,) = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            file.seek(phoff)
            table = file.read(phentsize * phnum)
    except OSError:
        return False
    kinds = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return PT_INTERP not in kinds


def find_busybox() -> str | None:
    """A statically linked busybox on this machine (``PATH`` first), or None."""
    on_path = shutil.which("busybox")
    candidates = [on_path] if on_path else []
    found = [p for p in (*candidates, *BUSYBOX_PLACES) if os.path.isfile(p) and is_static(p)]
    return found[0] if found else None


def write_config(root: str | Path, config: Mapping[str, Any]) -> None:
    """Write ``config`` (``{"config": {"Entrypoint": ...}}``) as the root's own image config."""
    Path(root, IMAGE_CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")


def busybox_root(
    root: str | Path, busybox: str | None = None, config: Mapping[str, Any] | None = None
) -> Path:
    """Make ``root`` a busybox image: ``/bin/busybox``, ``/bin/<applet>`` links, empty
    ``/root``; ``config`` becomes its image config. Raises ``FileNotFoundError`` without a
    static busybox (``busybox`` defaults to :func:`find_busybox`)."""
    source = busybox or find_busybox()
    if source is None or not is_static(source):
        raise FileNotFoundError("no statically linked busybox here: apt-get install busybox-static")
    bin_dir = Path(root, "bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, bin_dir / "busybox")
    listed = subprocess.run(
        [str(bin_dir / "busybox"), "--list"], capture_output=True, text=True, check=True
    )
    for applet in listed.stdout.split():
        link = bin_dir / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    Path(root, "root").mkdir(exist_ok=True)
    if config is not None:
        write_config(root, config)
    return Path(root)


def single_binary_root(
    root: str | Path,
    binary: str | Path,
    path: str = "/app/server",
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Make ``root`` an image of one file: ``binary`` copied to ``path`` (executable) and
    nothing else; ``config`` becomes its image config. ``binary`` should be static: the
    root has no C library to load a dynamic one with."""
    target = Path(root, path.lstrip("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, target)
    target.chmod(0o755)
    if config is not None:
        write_config(root, config)
    return Path(root)


def main(argv: list[str]) -> int:
    """``busybox DIR`` or ``binary DIR FILE [PATH]``: make a root from the command line."""
    if len(argv) == 2 and argv[0] == "busybox":
        print(busybox_root(argv[1]))
        return 0
    if len(argv) in (3, 4) and argv[0] == "binary":
        print(single_binary_root(argv[1], argv[2], argv[3] if len(argv) == 4 else "/app/server"))
        return 0
    print("usage: python -m vk_trio.devtools.images busybox DIR | binary DIR FILE [PATH]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
