"""One rootless sandbox for a simulated instance's process (``--run-containers``): making it,
talking to its pid 1 (``launcher.py``), forwarding into its network, killing it.

Built with util-linux ``unshare`` (user, mount, pid, network, UTS and IPC namespaces; no
bubblewrap, no root, no third-party tools). The layout the process sees is ``launcher.py``'s;
what the simulator keeps is here: the ``unshare`` process (killing it kills the launcher, pid 1,
and with it the whole pid namespace), the control socket, the output pipe and a temp dir that
is the root's mount point on the host (empty: the root is a tmpfs in the sandbox's mount
namespace), removed when the sandbox is.

Network: the sandbox has only its own loopback. The simulator reaches in by connecting sockets
the launcher made inside (``connect``); the sandbox reaches out only to the simulator's port,
through a listener the launcher made inside and the simulator accepts on, and to the host's
loopback ports of ``SandboxSpec.reach`` (a registry simulator), relayed the same way.
"""

from __future__ import annotations

import array
import contextlib
import functools
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import vk_trio

UNSHARE_FLAGS = ("--user", "--map-root-user", "--mount", "--net", "--pid", "--uts", "--ipc")
LAUNCHER = Path(__file__).with_name("launcher.py")
KILL_WAIT = 5.0
"""Seconds to wait for a killed sandbox's ``unshare`` to be reaped."""
START_TIMEOUT = 30.0
"""Seconds the launcher may take to build the root and exec (it takes ~50 ms)."""
DRAIN_WAIT = 2.0
"""Seconds to wait, once the process exited, for the rest of its output."""
IMAGE_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
HIDDEN_ROOTS = ("/proc", "/dev", "/etc", "/sys")
"""Never bound from the host, even if the simulator's Python lives there; nor is any
top-level directory as a whole (``/tmp``, ``/root``, ``/work``: a script's directory on
``sys.path``), only the paths below it."""


WHEEL_LIBS = (
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libresolv.so.2",
    "libz.so.1",
)
"""The system libraries a manylinux wheel may link (PEP 600's policy, less X11 and GL)."""


class SandboxError(Exception):
    """The sandbox could not be made, or its command could not be exec'd (``exec_failed``)."""

    def __init__(self, message: str, *, exec_failed: bool = False) -> None:
        super().__init__(message)
        self.exec_failed = exec_failed


@dataclass(frozen=True)
class SandboxSpec:
    """What runs: argv, environment, hostname, and the simulator's port to expose inside;
    ``image_root`` is a directory to use as the root filesystem instead of the host's userland
    (``--image-root``), ``workdir`` the process's working directory (the image's WORKDIR)."""

    argv: Sequence[str]
    env: dict[str, str]
    hostname: str
    sim_port: int
    image_root: str | None = None
    workdir: str = "/"
    reach: tuple[int, ...] = ()
    """Host loopback ports also reachable inside, at the same 127.0.0.1 port (relayed)."""


def unshare_command() -> list[str] | None:
    """``unshare`` with the namespaces a sandbox uses, or None when it is not installed."""
    unshare = shutil.which("unshare")
    return [unshare, *UNSHARE_FLAGS] if unshare else None


async def probe() -> str | None:
    """None when sandboxes can be made here, else what is missing and how to get it."""
    if getattr(sys, "frozen", False):
        return "the sandbox launcher needs a Python interpreter, not the frozen binary"
    command = unshare_command()
    if command is None:
        return "util-linux `unshare` is not installed (apt-get install util-linux)"
    result = await trio.run_process(
        [*command, "--fork", "true"], capture_stdout=True, capture_stderr=True, check=False
    )
    if result.returncode:
        why = result.stderr.decode(errors="replace").strip()
        return (
            f"`unshare --user --map-root-user` failed ({why}): enable unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0)"
        )
    return None


def python_binds() -> list[str]:
    """Host paths bound read-only at the same place, so that ``sys.executable -m vk_trio``
    runs inside: the interpreter, its prefixes, ``sys.path`` and the ``vk_trio`` package."""
    package_parent = os.path.dirname(os.path.dirname(vk_trio.__file__))
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        package_parent,
        *(entry for entry in sys.path if entry),
    ]
    paths = sorted({os.path.realpath(p) for p in candidates if os.path.isdir(p)})
    kept: list[str] = []
    for path in paths:  # sorted: a parent comes before what is under it
        covered = (*IMAGE_DIRS, *HIDDEN_ROOTS, *kept)
        if path.count("/") >= 2 and not any(path == c or path.startswith(c + "/") for c in covered):
            kept.append(path)
    return kept


@functools.cache
def python_runtime() -> list[str]:
    """Host files the simulator's interpreter needs beyond ``python_binds()`` once the host's
    userland is gone (an ``--image-root``): the symlinks from ``sys.executable`` to the real
    interpreter, its standard library, and the shared libraries (dynamic loader included)
    that it and the standard library's extension modules link, as ``ldd`` resolves them.

    Why: in an image root, the agent the simulator serves from a checkout is a ``sh`` script
    running this interpreter (``agent.py``), the simulator's stand-in for the real agent, a
    static binary that needs nothing from the image. Symlinks are listed with the paths they
    lead to. Third-party extension modules are not ``ldd``'d (~10 s over a venv): wheels
    bundle their own libraries and may link only the system's ``WHEEL_LIBS``, added here.
    Computed once (one ``ldd`` call, ~20 ms).
    """
    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    linked = [os.path.realpath(sys.executable), *glob.glob(stdlib + "/lib-dynload/*.so")]
    paths = [sys.executable, stdlib]
    ldd = shutil.which("ldd")
    if ldd:
        result = subprocess.run([ldd, *linked], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if line.startswith("\t") and path.startswith("/"):
                paths.append(path)
    libc_dirs = {os.path.dirname(p) for p in paths if os.path.basename(p) == "libc.so.6"}
    paths += [
        f"{d}/{name}" for d in libc_dirs for name in WHEEL_LIBS if os.path.exists(f"{d}/{name}")
    ]
    found: dict[str, None] = {}
    for path in paths:
        for link in _link_chain(os.path.abspath(path)):
            found.setdefault(link)
    return list(found)


def _link_chain(path: str) -> list[str]:
    """``path``, the symlinks it goes through one hop at a time, and where it ends."""
    chain = [path]
    while os.path.islink(path) and len(chain) < 40:
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
        chain.append(path)
    return chain


class Sandbox:
    """A started sandbox: its process ran exec; ``connect`` reaches into its network."""

    def __init__(self, control: trio.socket.SocketType) -> None:
        self._control = control
        self._sockets_in, self._sockets_out = trio.open_memory_channel[socket.socket](64)
        self.exit_code: int | None = None
        self.exited = trio.Event()
        """Set once the process has exited (``exit_code`` set) or the launcher died."""
        self.output_done = trio.Event()

    async def connect(self, port: int) -> trio.SocketStream:
        """A connection to 127.0.0.1:``port`` inside (``OSError`` when refused)."""
        await self._control.send(b"socket")
        sock = trio.socket.from_stdlib_socket(await self._sockets_out.receive())
        try:
            await sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def wait(self) -> int:
        """The process's exit code, once it exited and its output was read."""
        await self.exited.wait()
        with trio.move_on_after(DRAIN_WAIT):
            await self.output_done.wait()
        return 137 if self.exit_code is None else self.exit_code

    async def receive(self) -> tuple[dict[str, Any], list[int]]:
        """One message from the launcher and the fds it carried; ``{}`` once it is gone."""
        data, ancillary, _, _ = await self._control.recvmsg(65536, socket.CMSG_SPACE(16))
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        return (json.loads(data) if data else {}), list(fds)

    async def follow(self) -> None:
        """Read the launcher's messages after start: sockets asked for, then the exit."""
        while True:
            message, fds = await self.receive()
            if "socket" in message and fds:
                self._sockets_in.send_nowait(socket.socket(fileno=fds[0]))
            elif not message or "exit" in message:
                self.exit_code = message.get("exit")
                self.exited.set()
                return


async def _until_started(sandbox: Sandbox) -> dict[int, trio.SocketListener]:
    """Read the launcher's messages up to ``started``; the listeners it sent on the way,
    by the port they listen on inside."""
    listeners: dict[int, trio.SocketListener] = {}
    try:
        while True:
            message, fds = await sandbox.receive()
            if "listener" in message and fds:
                sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0]))
                listeners[int(message["listener"])] = trio.SocketListener(sock)
            elif "started" in message and listeners:
                return listeners
            else:
                why = message.get("exec_failed") or message.get("error") or "the launcher died"
                raise SandboxError(str(why), exec_failed="exec_failed" in message)
    except BaseException:
        for listener in listeners.values():
            await listener.aclose()
        raise


async def copy_stream(
    source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
) -> None:
    """Bytes one way; EOF is passed on, a broken side ends both ways."""
    try:
        async for chunk in source:
            await sink.send_all(chunk)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        scope.cancel()


async def _relay(port: int, stream: trio.SocketStream) -> None:
    """A connection made inside to a ``reach`` port, spliced to 127.0.0.1:``port`` of the
    host (closed if nothing listens there)."""
    async with stream:
        try:
            outer = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        async with outer, trio.open_nursery() as nursery:
            nursery.start_soon(copy_stream, stream, outer, nursery.cancel_scope)
            nursery.start_soon(copy_stream, outer, stream, nursery.cancel_scope)


async def _pump(
    stream: trio.abc.ReceiveStream, sink: Callable[[bytes | bytearray], None], done: trio.Event
) -> None:
    try:
        async for chunk in stream:
            sink(chunk)
    finally:
        done.set()


@asynccontextmanager
async def open_sandbox(
    spec: SandboxSpec,
    *,
    on_output: Callable[[bytes | bytearray], None],
    serve_sim: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[Sandbox]:
    """Make a sandbox and start ``spec.argv`` in it; entered once the process has started.

    ``on_output`` gets the process's stdout and stderr (one pipe, in order); ``serve_sim``
    serves each connection made inside to 127.0.0.1:``spec.sim_port``; one made to a port of
    ``spec.reach`` is relayed to the same port on the host's loopback. Raises
    ``SandboxError`` when the sandbox cannot be made or the command cannot be exec'd.

    Resource handling: leaving kills the whole sandbox (``unshare`` is killed, its child
    pid 1 dies with it, and the pid namespace with that) and removes its temp dir, also when
    cancelled or failing.
    """
    command = unshare_command()
    if command is None:
        raise SandboxError("util-linux unshare is not installed")
    root = await trio.to_thread.run_sync(functools.partial(tempfile.mkdtemp, prefix="vk-sim-"))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process: trio.Process | None = None
    try:
        with theirs:
            process = await trio.lowlevel.open_process(
                [
                    *command,
                    "--fork",
                    "--kill-child",
                    "--",
                    sys.executable,
                    "-I",
                    "-S",
                    str(LAUNCHER),
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        control = trio.socket.from_stdlib_socket(ours)
        runtime = await trio.to_thread.run_sync(python_runtime) if spec.image_root else []
        binds = [*python_binds(), *runtime]
        config = {**spec.__dict__, "argv": list(spec.argv), "root": root, "binds": binds}
        await control.send(json.dumps(config).encode())
        sandbox = Sandbox(control)
        try:  # raised here, not in a nursery's exception group
            with trio.fail_after(START_TIMEOUT):
                listeners = await _until_started(sandbox)
        except trio.TooSlowError:
            raise SandboxError(f"the sandbox did not start within {START_TIMEOUT} s") from None
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(_pump, process.stdout, on_output, sandbox.output_done)
            for port, listener in listeners.items():
                serve = serve_sim if port == spec.sim_port else functools.partial(_relay, port)
                nursery.start_soon(trio.serve_listeners, serve, [listener])
            nursery.start_soon(sandbox.follow)
            yield sandbox
            nursery.cancel_scope.cancel()
    finally:
        ours.close()
        await _kill(process)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_dir, root)


def _remove_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # already gone, or not ours to clean
        os.rmdir(path)


async def _kill(process: trio.Process | None) -> None:
    if process is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(KILL_WAIT):
        process.kill()
        await process.wait()
