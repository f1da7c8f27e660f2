"""Pid 1 of one simulated instance's sandbox (``--run-containers``): builds the container's
root filesystem, starts its process, reaps, and hands the simulator sockets of its network.

Run as a script, by path, with the simulator's interpreter under ``unshare --user
--map-root-user --mount --net --pid --uts --ipc --fork --kill-child`` (``sandbox.py``), so it
is root of fresh namespaces and nothing else: it imports only the standard library (no
``vk_trio``, no site packages) to start fast and stay small.

Why a pid 1 of our own rather than exec'ing the command directly: someone has to stay in the
network namespace after the command starts, because a socket belongs to the namespace it was
created in. The simulator asks over the control socket (``AF_UNIX``/``SOCK_SEQPACKET``, fd in
``argv[1]``) and gets back, with ``SCM_RIGHTS``:

- at start, a TCP socket listening on 127.0.0.1:<the simulator's port> inside, which the
  simulator accepts on and serves its own HTTP API from (the only thing the sandbox reaches),
  and one for each port of ``reach`` (the host's loopback ports the simulator relays to);
- on each ``socket`` request, a fresh unconnected TCP socket, which the simulator connects to
  127.0.0.1:<container port> to forward a published port.

Messages to the simulator are JSON: ``listener`` (with the fd), ``started``, ``exec_failed``
(the command could not be exec'd: Docker's "OCI runtime create failed"), ``error`` (the
sandbox could not be built), ``socket`` (with the fd) and ``exit`` (the exit code, 128+signal
when killed, as Docker reports it). When the command exits, so does this process, and the
kernel kills everything left in the pid namespace with it. When the control socket closes
(the simulator is gone), it exits too. ``--kill-child`` kills it if ``unshare`` is killed.

The command runs chrooted in the new root with the environment, argv and working directory
the simulator sent. The root is a tmpfs (the container's writable layer) holding the "image"
read-only: by default the host's ``/usr``, ``/bin``, ``/lib``... and a fresh ``/etc`` with
the host's loader cache and certificates; with an ``image_root`` directory (``--image-root``),
each of that directory's top-level entries bound read-only and nothing of the host's
userland. Either way ``/proc``, ``/dev``, ``/tmp`` (tmpfs) and ``/run`` are fresh, never the
image's. An image's own ``/etc`` becomes a tmpfs with its entries bound read-only and
``hostname``, ``hosts`` and ``resolv.conf`` written over, as Docker does; an image without
one gets a minimal /etc (root and nobody, hosts, hostname). The ``binds`` (the paths the
simulator's Python needs) are then bound read-only at their own paths, in an image root only
where the image has nothing at that top-level name.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
LOCKED_FLAGS = {  # statvfs flag → the mount flag a read-only remount must keep
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}
IMAGE_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_COPIED = ("nsswitch.conf", "ld.so.cache", "ld.so.conf", "localtime", "host.conf")
ETC_BOUND = ("ssl", "ca-certificates", "alternatives", "ld.so.conf.d")
FRESH = ("proc", "dev", "sys", "tmp", "run")
"""Never taken from an image: the runtime makes them (``/sys`` is not mounted at all)."""
KERNEL = ("proc", "dev", "sys")
"""Of those, what nothing is ever bound below (``/tmp`` and ``/run`` are tmpfs: a bound
path is made in them)."""
IMAGE_CONFIG_FILE = ".vk-trio-image-config.json"
"""An image root's config (``--image-root``), read by the simulator, not shown inside."""
ETC_FILES = ("passwd", "group", "hosts", "hostname", "resolv.conf")
GENERATED_ETC = ("hostname", "hosts", "resolv.conf")
"""What Docker bind-mounts over an image's own /etc."""
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def raw(text: str | None) -> bytes | None:
        return text.encode() if text else None

    if _libc.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def bind(source: str, target: str, *, read_only: bool = True) -> None:
    """Bind ``source`` at ``target`` (made here: a dir, or an empty file for a file)."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()  # an empty file to bind a file on
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        kept = sum(flag for st, flag in LOCKED_FLAGS.items() if os.statvfs(source).f_flag & st)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def build_root(config: dict[str, Any]) -> None:
    """The container's root at ``config["root"]``: the image (the host's userland, or
    ``image_root``), fresh /proc, /dev and /tmp, an /etc, then the ``binds`` read-only."""
    root, image = config["root"], config.get("image_root")
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    taken = layer(image, root, (*FRESH, "etc", IMAGE_CONFIG_FILE)) if image else host_image(root)
    for name, mode in (("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("run", 0o755)):
        os.mkdir(root + "/" + name, mode)
    os.mkdir(root + "/etc", 0o755)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    build_dev(root + "/dev")
    if image and os.path.isdir(image + "/etc") and not os.path.islink(image + "/etc"):
        layer(image + "/etc", root + "/etc", GENERATED_ETC)  # Docker writes these three
        write_etc(root + "/etc", config["hostname"], GENERATED_ETC)
    else:  # the host's userland, or an image with no /etc (distroless-like, busybox)
        write_etc(root + "/etc", config["hostname"], ETC_FILES)
        if image is None:
            copy_host_etc(root + "/etc")
    for path in config["binds"]:
        top = path.strip("/").split("/")[0]
        if top in KERNEL or os.path.lexists(root + path):
            continue  # the image's own file wins; /proc, /dev, /sys are the kernel's
        # below the fresh /tmp and /run (a checkout under /tmp, say), it is made in the tmpfs
        if top not in taken or (image and make_room(root, image, path)):
            place(path, root + path)


def host_image(root: str) -> set[str]:
    """Today's default image: a tmpfs root with the host's /usr, /bin, /lib... read-only."""
    mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755")
    for name in IMAGE_DIRS:
        host = "/" + name
        if os.path.islink(host):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host):
            bind(host, root + host)
    for name, mode in (("root", 0o700), ("var", 0o755), ("home", 0o755)):
        os.mkdir(root + "/" + name, mode)
    return set()


def layer(source: str, target: str, skip: tuple[str, ...]) -> set[str]:
    """A writable layer over a read-only image directory: a tmpfs at ``target`` with each
    entry of ``source`` bound read-only (symlinks copied), except the names in ``skip``.

    Why not bind ``source`` itself read-only: the container must be able to write new
    top-level entries (``/data``, ``/etc/app.conf``) as in Docker's writable layer, while
    the image's own files stay as they are. Returns the names taken from the image.
    """
    mount("tmpfs", target, "tmpfs", MS_NOSUID, "mode=0755")
    taken = set()
    for entry in os.scandir(source):
        path = f"{target}/{entry.name}"
        if entry.name in skip:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), path)
        elif entry.is_dir() or entry.is_file():
            bind(entry.path, path)
        else:
            continue  # a device, fifo or socket is no part of an image
        taken.add(entry.name)
    return taken


OPENED: set[str] = set()
"""The image directories ``make_room`` has turned into layers (this process builds one root)."""


def make_room(root: str, image: str, path: str) -> bool:
    """Open the image directories on the way to ``path`` so that a mount point can be made
    there: each becomes a tmpfs with its entries bound read-only (``layer``), so the image
    looks the same. False when the way goes through a symlink of the image (not followed:
    it could lead anywhere, the bind is skipped)."""
    parts = path.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        relative = "/".join(parts[:depth])
        target = f"{root}/{relative}"
        if os.path.islink(target):
            return False
        if not os.path.exists(target):
            return True  # below here everything is made in a tmpfs
        source = f"{image}/{relative}"
        if target not in OPENED and os.path.ismount(target) and os.path.isdir(source):
            umount(target)
            layer(source, target, ())
            OPENED.add(target)  # opened once: again would drop what was bound in it since
    return True


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH):
        errno = ctypes.get_errno()
        raise OSError(errno, f"umount {target}: {os.strerror(errno)}")


def place(source: str, target: str) -> None:
    """``source`` (a host path) at ``target``: a symlink is copied, anything else bound."""
    if os.path.islink(source):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(source), target)
    elif os.path.exists(source):
        bind(source, target)


def build_dev(dev: str) -> None:
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            bind("/dev/" + name, f"{dev}/{name}", read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, f"{dev}/{name}")
    os.symlink("/proc/self/fd/1", dev + "/stdout")
    os.symlink("/proc/self/fd/2", dev + "/stderr")
    os.mkdir(dev + "/shm", 0o1777)
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # Pseudo-terminals of the container's own (``kubectl exec -it``), as Docker gives it: a
    # private devpts instance, and /dev/ptmx through it.
    os.mkdir(dev + "/pts", 0o755)
    try:
        mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666")
    except OSError:
        return  # a kernel that refuses devpts here: the container has no terminals
    os.symlink("pts/ptmx", dev + "/ptmx")


def write_etc(etc: str, hostname: str, names: tuple[str, ...]) -> None:
    """The /etc files the runtime writes (``names`` of them): users, hosts, hostname."""
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n",
        "hostname": hostname + "\n",
        "resolv.conf": "",
    }
    for name in names:
        with open(f"{etc}/{name}", "w") as file:
            file.write(files[name])


def copy_host_etc(etc: str) -> None:
    """What the host's userland needs from the host's /etc (loader cache, certificates)."""
    for name in ETC_COPIED:
        if os.path.islink("/etc/" + name):
            os.symlink(os.readlink("/etc/" + name), f"{etc}/{name}")
        elif os.path.isfile("/etc/" + name):
            shutil.copyfile("/etc/" + name, f"{etc}/{name}")
    for name in ETC_BOUND:
        if os.path.isdir("/etc/" + name):
            bind("/etc/" + name, f"{etc}/{name}")


def loopback_up() -> None:
    """A fresh network namespace has ``lo`` down: bring it up (no ``ip`` needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def send(control: socket.socket, message: dict[str, Any], fd: int | None = None) -> None:
    data = json.dumps(message).encode()
    if fd is None:
        control.send(data)
    else:
        socket.send_fds(control, [data], [fd])


def tcp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def send_listener(control: socket.socket, port: int) -> None:
    """127.0.0.1:``port`` inside, listening, for the simulator to accept on."""
    with tcp_socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        send(control, {"listener": port}, listener.fileno())


def enter_workdir(workdir: str) -> None:
    """``chdir`` to the image's WORKDIR, made first if missing (Docker makes it too)."""
    with contextlib.suppress(OSError):  # read-only: the chdir says whether it is there
        os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)


def spawn(config: dict[str, Any]) -> tuple[int, str]:
    """Fork the command, chrooted; ``(pid, "")``, or ``(pid, why)`` when exec failed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.chroot(config["root"])
            enter_workdir(config.get("workdir") or "/")
            for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                signal.signal(number, signal.SIG_DFL)
            os.execvpe(config["argv"][0], config["argv"], config["env"])
        except BaseException as exc:  # reported, whatever it was
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        failure = pipe.read().decode(errors="replace")
    return pid, failure


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def reap(child: int) -> int | None:
    """Reap every exited process (pid 1 inherits orphans); the command's code once it ended."""
    result = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return result
        if pid == 0:
            return result
        if pid == child:
            result = exit_code(status)


def serve(control: socket.socket, child: int) -> int:
    """Reap and answer socket requests until the command exits or the simulator goes."""
    wake_read, wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        code = reap(child)
        if code is not None:
            send(control, {"exit": code})
            return code
        ready, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        if control.fileno() in ready:
            request = control.recv(4096)
            if not request:
                return 137  # the simulator is gone: take everything down with us
            with tcp_socket() as sock:
                send(control, {"socket": True}, sock.fileno())


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(control.recv(1 << 20))
    try:
        loopback_up()
        socket.sethostname(config["hostname"])
        build_root(config)
        send_listener(control, config["sim_port"])
        for port in config.get("reach") or ():
            if port != config["sim_port"]:
                send_listener(control, port)
    except OSError as exc:
        send(control, {"error": str(exc)})
        return 125
    child, failure = spawn(config)
    if failure:
        reap(child)
        send(control, {"exec_failed": failure})
        return 127
    send(control, {"started": child})
    return serve(control, child)


if __name__ == "__main__":
    sys.exit(main())
