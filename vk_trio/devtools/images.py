"""Image root filesystems for the Vast simulator's ``--image-root``, made from what a machine
has: no registry pull, no root, no Docker.

- :func:`shell_root`: a small image with a shell and the usual tools (``sh``, ``cat``,
  ``wget`` or ``curl``, ``sha256sum``, ``sleep``...), enough for the vk-trio bootstrap to
  fetch and run the agent in it, like a small real image. It is :func:`busybox_root` when a
  static busybox is installed, else :func:`host_tools_root`;
- :func:`busybox_root`: a static ``busybox`` as ``/bin/busybox`` and every applet it lists
  as a ``/bin`` link to it;
- :func:`host_tools_root`: the host's own ``sh`` (dash), coreutils and downloader copied to
  ``/bin``, with the shared libraries and the dynamic loader they need at the paths ``ldd``
  names: the same shape, from any glibc machine, so nothing needs ``busybox-static``;
- :func:`single_binary_root`: one binary at one path (with its libraries when it is
  dynamic: ``libraries=True``) and no ``/bin/sh``: a "distroless" image, where a create with
  ``onstart: "sh"`` fails as on Vast.

A static busybox is Debian's ``busybox-static`` (``apt-get install busybox-static``, or
without root ``apt-get download busybox-static && dpkg-deb -x busybox-static_*.deb DIR``,
then ``DIR/bin/busybox``). ``python -m vk_trio.devtools.images shell DIR`` makes a shell root
from the shell.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vk_trio.devtools.sim.vast.images import IMAGE_CONFIG_FILE

__all__ = [
    "busybox_root",
    "find_busybox",
    "host_tools_root",
    "is_static",
    "shell_root",
    "single_binary_root",
    "write_config",
]

BUSYBOX_PLACES = ("/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox")
PT_INTERP = 3
"""ELF program header type naming the dynamic loader: present in every dynamic binary."""
HOST_TOOLS = (
    "sh", "cat", "ls", "env", "sleep", "mkdir", "chmod", "mv", "cp", "rm", "ln", "touch",
    "head", "tail", "stat", "sha256sum", "test", "[", "echo", "printf", "true", "false",
    "id", "wget", "curl",
)  # fmt: skip
"""What :func:`host_tools_root` copies when the host has it: what the bootstrap, the tests'
scripts and a person poking around use (a missing one is left out, not an error)."""


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


def shell_root(root: str | Path, config: Mapping[str, Any] | None = None) -> Path:
    """Make ``root`` a small image with a shell and the usual tools: :func:`busybox_root`
    when a static busybox is installed (one static file, the closest to a real small image),
    else :func:`host_tools_root`, so that it works on any machine that runs the tests."""
    if find_busybox() is not None:
        return busybox_root(root, config=config)
    return host_tools_root(root, config=config)


def host_tools_root(
    root: str | Path,
    tools: tuple[str, ...] = HOST_TOOLS,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Make ``root`` an image of the host's own tools: each of ``tools`` found on ``PATH``
    copied to ``/bin`` (``sh`` is what ``/bin/sh`` is, dash on Debian), and the shared
    libraries and dynamic loader they link copied to the paths ``ldd`` names (``/lib...``,
    where the loader looks without a cache), empty ``/root``; ``config`` becomes its image
    config. Raises ``FileNotFoundError`` when the host has no ``sh``.

    Why copies and not binds: a root is a plain directory the simulator binds read-only,
    which can outlive the host's packages being upgraded under it, and that a test can
    inspect. No ``/usr`` is made unless a library lives there: the image shows none of
    the host's userland beyond what was copied.
    """
    bin_dir = Path(root, "bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for tool in tools:
        found = "/bin/sh" if tool == "sh" else shutil.which(tool)
        if found is None or not os.path.isfile(found):
            if tool == "sh":
                raise FileNotFoundError("the host has no /bin/sh to copy")
            continue
        target = bin_dir / tool
        shutil.copy(os.path.realpath(found), target)  # content and mode, not the link
        copied.append(str(target))
    if not any(Path(p).name in ("wget", "curl") for p in copied):
        _python_wget(bin_dir / "wget")
    copy_libraries(root, copied)
    Path(root, "root").mkdir(exist_ok=True)
    if config is not None:
        write_config(root, config)
    return Path(root)


def copy_libraries(root: str | Path, binaries: list[str]) -> None:
    """Copy into ``root``, at the paths ``ldd`` names, what ``binaries`` link."""
    for library in linked_libraries(binaries):
        target = Path(root, library.lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy(os.path.realpath(library), target)


def linked_libraries(binaries: list[str]) -> list[str]:
    """The shared libraries (and dynamic loader) that ``binaries`` link, as ``ldd`` resolves
    them; none for static ones or without ``ldd`` (a musl or static host: then the copies
    are static, or the root cannot work and the tests using it say so)."""
    ldd = shutil.which("ldd")
    dynamic = [b for b in binaries if not is_static(b)]
    if not ldd or not dynamic:
        return []
    result = subprocess.run([ldd, *dynamic], capture_output=True, text=True, check=False)
    found: dict[str, None] = {}
    for line in result.stdout.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if line.startswith("\t") and path.startswith("/") and os.path.exists(path):
            found.setdefault(path)
    return list(found)


def _python_wget(target: Path) -> None:
    """A ``wget -q -O FILE URL`` on the simulator's own Python, for a host without wget
    or curl: the sandbox binds that interpreter into every image root (``sandbox.py``)."""
    target.write_text(
        f"#!{sys.executable} -I\n"
        "import sys, urllib.request\n"
        "args = [a for a in sys.argv[1:] if a != '-q']\n"
        "out = args[args.index('-O') + 1] if '-O' in args else args[-1].rsplit('/', 1)[-1]\n"
        "urllib.request.urlretrieve(args[-1], out)\n"
    )
    target.chmod(0o755)


def single_binary_root(
    root: str | Path,
    binary: str | Path,
    path: str = "/app/server",
    config: Mapping[str, Any] | None = None,
    *,
    libraries: bool = False,
) -> Path:
    """Make ``root`` an image of one file: ``binary`` copied to ``path`` (executable) and
    nothing else; ``config`` becomes its image config. A dynamic ``binary`` needs
    ``libraries=True``: its shared libraries and loader are copied too (``ldd``), as a
    distroless image carries its C library, still with no shell."""
    target = Path(root, path.lstrip("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(binary), target)
    target.chmod(0o755)
    if libraries:
        copy_libraries(root, [str(target)])
    if config is not None:
        write_config(root, config)
    return Path(root)


def main(argv: list[str]) -> int:
    """``shell DIR``, ``busybox DIR``, ``host-tools DIR`` or ``binary DIR FILE [PATH]``:
    make a root from the command line (``binary`` copies a dynamic FILE's libraries too)."""
    makers: dict[str, Callable[[str], Path]] = {
        "shell": shell_root,
        "busybox": busybox_root,
        "host-tools": host_tools_root,
    }
    if len(argv) == 2 and argv[0] in makers:
        print(makers[argv[0]](argv[1]))
        return 0
    if len(argv) in (3, 4) and argv[0] == "binary":
        path = argv[3] if len(argv) == 4 else "/app/server"
        print(single_binary_root(argv[1], argv[2], path, libraries=not is_static(argv[2])))
        return 0
    print(
        "usage: python -m vk_trio.devtools.images shell|busybox|host-tools DIR"
        " | binary DIR FILE [PATH]"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
