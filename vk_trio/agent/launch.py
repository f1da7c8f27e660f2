"""What a container's process is started with: its environment, directory, user and program.

Decisions, each the container runtime's (Docker/runc), because the pod's author wrote the pod
for one:

- **Environment**: exactly the spec's ``env`` (the node sends the image's ENV and the pod's,
  already merged), and nothing of the agent's own (its credentials live there). As Docker,
  ``PATH`` defaults to ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`` and
  ``HOME`` to the user's home from /etc/passwd (``/`` without one) when the spec has none.
- **Directory**: ``working_dir``, default ``/``; made when missing, as Docker makes WORKDIR.
- **User**: ``uid``, ``uid:gid``, ``name`` or ``name:group`` (names from the instance's
  /etc/passwd and /etc/group); a bare uid takes its passwd entry's group, else 0, and the
  user's supplementary groups, as Docker does. An agent that is not root can only run
  processes as itself: any other user is a ``StartError``.
- **Program**: ``argv[0]`` is looked up in the process's own ``PATH`` (not the agent's), and a
  missing one fails with runc's message, ``exec: "x": executable file not found in $PATH``,
  which the kubelet shows in the container's ``StartError``.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

import trio

from vk_trio.agent.protocol import ProcessSpec

__all__ = ["DEFAULT_PATH", "Identity", "Launch", "LaunchError", "find_executable", "prepare"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LaunchError(Exception):
    """The process cannot be started; the message is the container's ``StartError``."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True)
class Launch:
    """Everything ``open_process`` needs for one container's process (and its probes)."""

    env: dict[str, str]
    cwd: str
    identity: Identity | None
    """None: run as the agent runs."""

    @property
    def uid(self) -> int | None:
        return None if self.identity is None else self.identity.uid

    @property
    def gid(self) -> int | None:
        return None if self.identity is None else self.identity.gid

    @property
    def groups(self) -> list[int] | None:
        return None if self.identity is None else list(self.identity.groups)


def _group_id(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise LaunchError(
            f"unable to find group {name}: no matching entries in group file"
        ) from None


def _identity(user: str) -> Identity:
    name, _, group = user.partition(":")
    entry: pwd.struct_passwd | None
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise LaunchError(
                f"unable to find user {name}: no matching entries in passwd file"
            ) from None
        entry = None
    uid = int(name) if entry is None else entry.pw_uid
    gid = _group_id(group) if group else (0 if entry is None else entry.pw_gid)
    groups: tuple[int, ...] = ()
    if entry is not None and not group:
        groups = tuple(g for g in os.getgrouplist(entry.pw_name, gid) if g != gid)
    return Identity(uid, gid, groups, "/" if entry is None else entry.pw_dir)


def _resolve_identity(user: str) -> Identity | None:
    if not user:
        return None
    identity = _identity(user)
    if os.geteuid() != 0:
        if identity.uid == os.geteuid() and identity.gid == os.getegid():
            return None
        raise LaunchError(f"cannot run as user {user!r}: the agent does not run as root")
    return identity


def find_executable(program: str, path: str, cwd: str) -> str:
    """``program`` as runc's exec would find it (``$PATH`` for a bare name)."""
    if "/" in program:
        full = os.path.join(cwd, program)
        if not os.path.exists(full):
            raise LaunchError(f'exec: "{program}": stat {program}: no such file or directory')
        return full
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise LaunchError(f'exec: "{program}": executable file not found in $PATH')


def _env(spec: ProcessSpec, identity: Identity | None) -> dict[str, str]:
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    if "HOME" not in env:
        env["HOME"] = identity.home if identity else (_own_home() or "/")
    return env


def _own_home() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return None


def _prepare_sync(spec: ProcessSpec) -> tuple[Launch, str]:
    if not spec.argv:
        raise LaunchError("no command specified")
    identity = _resolve_identity(spec.user)
    cwd = spec.working_dir or "/"
    os.makedirs(cwd, exist_ok=True)
    env = _env(spec, identity)
    executable = find_executable(spec.argv[0], env["PATH"], cwd)
    return Launch(env=env, cwd=cwd, identity=identity), executable


async def prepare(spec: ProcessSpec) -> tuple[Launch, str]:
    """The process's launch settings and its program's path. Raises :class:`LaunchError`.

    In a worker thread: /etc/passwd, the PATH walk and the directory are file system work.
    """
    try:
        return await trio.to_thread.run_sync(_prepare_sync, spec)
    except OSError as error:
        raise LaunchError(f"cannot start {spec.argv[0]!r}: {error.strerror}") from None
