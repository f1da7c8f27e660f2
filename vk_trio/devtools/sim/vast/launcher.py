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
  simulator accepts on and serves its own HTTP API from (the only thing the sandbox reaches);
- on each ``socket`` request, a fresh unconnected TCP socket, which the simulator connects to
  127.0.0.1:<container port> to forward a published port.

Messages to the simulator are JSON: ``listener`` (with the fd), ``started``, ``exec_failed``
(the command could not be exec'd: Docker's "OCI runtime create failed"), ``error`` (the
sandbox could not be built), ``socket`` (with the fd) and ``exit`` (the exit code, 128+signal
when killed, as Docker reports it). When the command exits, so does this process, and the
kernel kills everything left in the pid namespace with it. When the control socket closes
(the simulator is gone), it exits too. ``--kill-child`` kills it if ``unshare`` is killed.

The command runs chrooted in the new root with the environment and argv the simulator sent;
the root is a tmpfs (the container's writable layer), the host's ``/usr`` and friends are
bound read-only (the "image"), and so are the paths the simulator's Python needs.
"""

from __future__ import annotations

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
    """The container's root at ``config["root"]``: tmpfs, the image read-only, fresh /proc,
    /dev, /tmp and /etc, then the simulator's Python paths read-only."""
    root = config["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755")
    for name in IMAGE_DIRS:
        host = "/" + name
        if os.path.islink(host):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host):
            bind(host, root + host)
    for name, mode in (("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
        os.mkdir(root + "/" + name, mode)
    for name, mode in (("root", 0o700), ("run", 0o755), ("var", 0o755), ("home", 0o755)):
        os.mkdir(root + "/" + name, mode)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    build_dev(root + "/dev")
    build_etc(root + "/etc", config["hostname"])
    for path in config["binds"]:
        bind(path, root + path)


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


def build_etc(etc: str, hostname: str) -> None:
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n",
        "hostname": hostname + "\n",
        "resolv.conf": "",
    }
    for name, text in files.items():
        with open(f"{etc}/{name}", "w") as file:
            file.write(text)
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


def spawn(config: dict[str, Any]) -> tuple[int, str]:
    """Fork the command, chrooted; ``(pid, "")``, or ``(pid, why)`` when exec failed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.chroot(config["root"])
            os.chdir("/")
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
