"""The pod's volumes, written and placed as the kubelet would, without mount(2).

The agent runs as the first process of a plain Docker container with no extra capabilities,
so it cannot bind-mount or mount a tmpfs. Everything here is done with files, directories,
symlinks and renames instead; what a process in the pod sees is close to the kubelet's:

- **Where volumes live.** ``state_dir/volumes/<name>``; a ``Memory`` emptyDir's directory is
  under ``/dev/shm`` instead (see :meth:`Volumes.make`) and ``state_dir/volumes/<name>`` is a
  symlink to it.
- **Files volumes** (configMap, secret, downwardAPI, projected; resolved by the node) are
  written like the kubelet's AtomicWriter (``pkg/volume/util/atomic_writer.go``): the files
  go into a new timestamped directory ``..2026_12_07_15_04_05.123456789``, a ``..data_tmp``
  symlink to it is renamed over ``..data`` (one rename, so a reader sees either the old
  files or the new, never a mix), and each top-level name is a symlink ``name ->
  ..data/name``. Applications that watch ``..data`` for changes (as they do on Kubernetes)
  work unchanged.
- **Mounts are symlinks.** ``root/<mountPath>`` becomes a symlink to the volume's directory.
  Paths through it resolve as through a bind mount (``open``, ``ls /etc/config/``, ``cd``),
  with these visible differences: ``lstat`` of the mount path itself says symlink, ``readlink``
  and ``realpath`` show the state directory, ``df`` shows the container's disk, and tools
  that do not follow a symlink given as an argument without a trailing slash (``find``
  without ``-L``, ``cp -r``, ``tar``) see a link rather than a tree. Mounting one volume at
  several paths is several symlinks to one directory, so every path sees every write, as
  with bind mounts.
- **What was at the mount path.** A bind mount hides what the image has there; a symlink
  must replace it. An empty directory is removed; anything else (a file, a non-empty
  directory, a symlink of the image's) is renamed to ``<path>.vk-trio-orig`` with a log
  line, so nothing of the image is lost. If that name is taken too the mount fails.
- **subPath.** The kubelet bind-mounts the one file or directory, and a later update of the
  volume does not reach it (the Kubernetes documentation says so). For files volumes that is
  reproduced by copying the target, resolved through ``..data``, to the mount path as a
  regular file or directory. For an emptyDir the mount path is a symlink to
  ``volume/subPath`` (created), so writes are shared as with the kubelet.
- **readOnly.** Best effort only: the kubelet uses a read-only bind mount, which even root
  cannot write through; here only the mode bits say read-only, and root (the usual user of
  these images) ignores them. subPath copies lose their write bits (files 0644 → 0444,
  directories 0555); an emptyDir that no mount asks to write is made 0555. Files volumes
  keep the modes the pod asked for (``defaultMode``/``mode``), as the kubelet shows them.
- **sizeLimit.** The kubelet evicts a pod whose emptyDir outgrows its ``sizeLimit`` (and
  sizes a Memory emptyDir's tmpfs by it); :meth:`Volumes.over_limit` measures and says so,
  and the runner acts.
- **Remounting** (the node reconnects, the agent restarts in the same container) is
  idempotent: a symlink that already points at the volume is kept, and a subPath copy the
  agent made (recorded in ``state_dir/mounts.json``) is not made again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import trio
from loguru import logger

from vk_trio.agent.protocol import Mount, Volume, VolumeFile

__all__ = ["VolumeError", "Volumes"]

DATA = "..data"
DATA_TMP = "..data_tmp"
ORIG_SUFFIX = ".vk-trio-orig"
MAX_PATH = 4096
EMPTY_DIR_MODE = 0o777
"""The kubelet makes an emptyDir world-writable, so that any user in the pod can use it."""
READ_ONLY_DIR_MODE = 0o555
SHM = Path("/dev/shm")


class VolumeError(Exception):
    """A volume could not be made, placed or updated: one line naming the volume and why,
    for the pod's status."""


def _relative(path: str, what: str, volume: str) -> PurePosixPath:
    """The atomic writer's ``validatePath``: a path inside the volume, never outside it nor
    on the writer's own ``..`` names (which would let a key replace ``..data``)."""
    if not path:
        raise VolumeError(f"volume {volume!r}: {what} must not be empty")
    if len(path) > MAX_PATH:
        raise VolumeError(f"volume {volume!r}: {what} is longer than {MAX_PATH} characters")
    if path.startswith("/"):
        raise VolumeError(f"volume {volume!r}: {what} {path!r} must be a relative path")
    if ".." in path.split("/"):
        raise VolumeError(f"volume {volume!r}: {what} {path!r} must not contain '..'")
    clean = PurePosixPath(path)
    if not clean.parts:
        raise VolumeError(f"volume {volume!r}: {what} {path!r} names no file")
    if clean.parts[0].startswith(".."):
        raise VolumeError(f"volume {volume!r}: {what} {path!r} must not start with '..'")
    return clean


def _payload(volume: Volume) -> dict[PurePosixPath, VolumeFile]:
    """The volume's files by validated path; a path that is both a file and a directory of
    another is refused (the writer could not make both)."""
    files = volume.files or []
    payload = {_relative(f.path, "path", volume.name): f for f in files}
    dirs = {parent for path in payload for parent in path.parents}
    clash = sorted(str(path) for path in payload if path in dirs)
    if clash:
        raise VolumeError(f"volume {volume.name!r}: {clash[0]!r} is both a file and a directory")
    return payload


def _check_name(name: str) -> None:
    """A volume's name is one path element of ours (a DNS label on Kubernetes)."""
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise VolumeError(f"volume name {name!r} is not a valid name")


def _is_tmpfs(path: Path) -> bool:
    """Whether ``path`` is a writable tmpfs mount point (``/proc/self/mounts``)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    where = os.path.realpath(path)
    fstype = ""
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1].replace("\\040", " ") == where:
            fstype = fields[2]  # the last mount at a path is the one seen
    return fstype == "tmpfs" and os.access(path, os.W_OK | os.X_OK)


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except (FileNotFoundError, OSError):
        return None


def _same_payload(directory: Path, payload: dict[PurePosixPath, VolumeFile]) -> bool:
    """Whether ``directory`` already holds exactly ``payload``: the kubelet skips a write
    that changes nothing, so that watchers of ``..data`` see no spurious swap."""
    found: set[PurePosixPath] = set()
    for top, _dirs, names in os.walk(directory):
        for name in names:
            found.add(PurePosixPath(os.path.relpath(os.path.join(top, name), directory)))
    if found != set(payload):
        return False
    for rel, file in payload.items():
        path = directory / rel
        if stat.S_IMODE(path.lstat().st_mode) != file.mode & 0o7777:
            return False
        if path.read_bytes() != file.data:
            return False
    return True


def _new_timestamped_dir(vol_dir: Path) -> Path:
    """``..2026_12_07_15_04_05.123456789``, as the kubelet names its payload directories."""
    ns = time.time_ns()
    while True:
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(ns // 1_000_000_000))
        path = vol_dir / f"..{stamp}.{ns % 1_000_000_000:09d}"
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            ns += 1
            continue
        path.chmod(0o755)
        return path


def _write_files(directory: Path, payload: dict[PurePosixPath, VolumeFile]) -> None:
    for rel, file in payload.items():
        path = directory / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(file.data)
            os.fchmod(handle.fileno(), file.mode & 0o7777)


def _swap_data(vol_dir: Path, target: str) -> None:
    """``..data_tmp -> target`` renamed over ``..data``: the one atomic step."""
    tmp = vol_dir / DATA_TMP
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, vol_dir / DATA)


def _visible_paths(vol_dir: Path, top: set[str]) -> None:
    """Each top-level name a symlink into ``..data``; names of an older payload removed."""
    with os.scandir(vol_dir) as entries:
        stale = [e.name for e in entries if not e.name.startswith("..") and e.name not in top]
    for name in stale:
        path = vol_dir / name
        if path.is_symlink():
            path.unlink()
    for name in sorted(top):
        path = vol_dir / name
        want = f"{DATA}/{name}"
        if _readlink(path) == want:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        os.symlink(want, path)


def _remove_old_payloads(vol_dir: Path, keep: str) -> None:
    """Every timestamped directory but the current one (the old, or a crashed write's)."""
    with os.scandir(vol_dir) as entries:
        old = [
            e.name
            for e in entries
            if e.name.startswith("..") and e.name != keep and e.is_dir(follow_symlinks=False)
        ]
    for name in old:
        shutil.rmtree(vol_dir / name, ignore_errors=True)


def _atomic_write(vol_dir: Path, payload: dict[PurePosixPath, VolumeFile]) -> bool:
    """The AtomicWriter's steps; False when the payload was already there."""
    vol_dir.mkdir(parents=True, exist_ok=True)
    current = _readlink(vol_dir / DATA)
    top = {rel.parts[0] for rel in payload}
    if current is not None and _same_payload(vol_dir / current, payload):
        _visible_paths(vol_dir, top)
        return False
    new = _new_timestamped_dir(vol_dir)
    _write_files(new, payload)
    _swap_data(vol_dir, new.name)
    _visible_paths(vol_dir, top)
    _remove_old_payloads(vol_dir, new.name)
    return True


def _tree_size(path: Path) -> int:
    """Apparent bytes of everything under ``path`` (files and symlinks, not followed)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


def _quantity(size: int) -> str:
    """Bytes as Kubernetes prints a quantity: ``1Gi`` when exact, else the number."""
    for suffix, unit in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _make_room(target: Path, volume: str) -> None:
    """Clear ``target`` for a mount: an empty directory goes, anything else of the image's
    is moved aside to ``<target>.vk-trio-orig`` (a bind mount would only hide it)."""
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        with os.scandir(target) as entries:
            empty = next(entries, None) is None
        if empty:
            target.rmdir()
            return
    aside = target.with_name(target.name + ORIG_SUFFIX)
    if os.path.lexists(aside):
        raise VolumeError(f"volume {volume!r}: {target} is taken and so is {aside}")
    os.rename(target, aside)
    logger.warning("volume {}: moved what the image has at {} to {}", volume, target, aside)


def _read_only_tree(path: Path) -> None:
    """Write bits off: files keep their other bits (0644 → 0444), directories 0555."""
    if path.is_file():
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        return
    for top, _dirs, names in os.walk(path, topdown=False):
        for name in names:
            file = Path(top, name)
            if not file.is_symlink():
                file.chmod(stat.S_IMODE(file.stat().st_mode) & ~0o222)
        Path(top).chmod(READ_ONLY_DIR_MODE)


def _copy(source: Path, target: Path) -> None:
    """A subPath's frozen copy, written beside the target and renamed into place."""
    tmp = target.with_name(f".{target.name}.vk-trio-tmp")
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    elif os.path.lexists(tmp):
        tmp.unlink()
    if source.is_dir():
        shutil.copytree(source, tmp, symlinks=False)
    else:
        shutil.copy2(source, tmp)
    os.rename(tmp, target)


def _symlink(target: Path, dest: Path) -> None:
    """``target -> dest``, made beside it and renamed into place."""
    tmp = target.with_name(f".{target.name}.vk-trio-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(dest, tmp)
    os.replace(tmp, target)


class Volumes:
    """The pod's volumes: made once from the bundle, placed at each container's mount
    paths, and swapped whole when the node sends a changed ConfigMap or Secret."""

    def __init__(self, root: Path, state_dir: Path, *, shm: Path = SHM) -> None:
        self._root = root
        self._base = state_dir / "volumes"
        self._record = state_dir / "mounts.json"
        self._shm = shm
        self._volumes: dict[str, Volume] = {}
        self._dirs: dict[str, Path] = {}
        self._writable: set[str] = set()
        self._placed: dict[str, list[str]] | None = None
        self._lock = trio.Lock()

    # -- making ------------------------------------------------------------------------------

    async def make(self, volumes: Sequence[Volume]) -> None:
        """Every volume of the bundle; an existing emptyDir keeps its content (the kubelet's
        outlives the container's restarts), a files volume is rewritten only if changed."""
        async with self._lock:
            for volume in volumes:
                await trio.to_thread.run_sync(self._make_one, volume)

    async def update(self, volume: Volume) -> None:
        """The atomic swap again for a files volume: readers of ``..data`` see the new files
        in one rename; subPath copies stay as they were (as the kubelet's do)."""
        if volume.files is None:
            raise VolumeError(f"volume {volume.name!r}: an emptyDir has nothing to update")
        async with self._lock:
            await trio.to_thread.run_sync(self._make_one, volume)

    def _make_one(self, volume: Volume) -> None:
        _check_name(volume.name)
        try:
            if volume.files is not None:
                payload = _payload(volume)
                path = self._base / volume.name
                if _atomic_write(path, payload):
                    logger.info("volume {}: wrote {} files", volume.name, len(payload))
            else:
                path = self._make_empty_dir(volume)
        except OSError as err:
            raise VolumeError(f"volume {volume.name!r}: cannot write it: {err}") from err
        self._volumes[volume.name] = volume
        self._dirs[volume.name] = path

    def _make_empty_dir(self, volume: Volume) -> Path:
        """A directory; ``Memory`` on ``/dev/shm`` when that is a writable tmpfs (what an
        unprivileged container has of tmpfs; it is not sized by the sizeLimit and Docker's
        default is only 64 MiB), else on disk with a log line saying so."""
        link = self._base / volume.name
        path = link
        if volume.medium == "Memory" and not (link.is_dir() and not link.is_symlink()):
            # (an emptyDir already on disk stays there: its content outlives restarts)
            path = self._memory_dir(volume) or link
        if path != link and _readlink(link) != str(path):
            link.parent.mkdir(parents=True, exist_ok=True)
            _symlink(link, path)
        if not path.is_dir():
            path.mkdir(parents=True)
            path.chmod(EMPTY_DIR_MODE)
        return path

    def _memory_dir(self, volume: Volume) -> Path | None:
        if not _is_tmpfs(self._shm):
            logger.warning(
                "volume {}: medium Memory but {} is no writable tmpfs: on disk instead",
                volume.name,
                self._shm,
            )
            return None
        room = shutil.disk_usage(self._shm).total
        if volume.size_limit is not None and room < volume.size_limit:
            logger.warning(
                "volume {}: medium Memory but {} holds {} bytes, under its sizeLimit: on disk",
                volume.name,
                self._shm,
                room,
            )
            return None
        return self._shm / "vk-trio" / volume.name

    # -- placing -----------------------------------------------------------------------------

    async def mount(self, mounts: Sequence[Mount]) -> None:
        """Each mount's volume at ``root/mount.path``; shallow paths first, so that a mount
        inside another's path lands inside that volume (as nested bind mounts do)."""
        ordered = sorted(mounts, key=lambda m: len(PurePosixPath("/", m.path).parts))
        async with self._lock:
            await trio.to_thread.run_sync(self._load_record)
            for mount in ordered:
                await trio.to_thread.run_sync(self._mount_one, mount)

    def _load_record(self) -> None:
        if self._placed is not None:
            return
        try:
            self._placed = json.loads(self._record.read_text())
        except (OSError, ValueError):
            self._placed = {}

    def _save_record(self) -> None:
        tmp = self._record.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self._placed))
        os.replace(tmp, self._record)

    def _target(self, mount: Mount) -> Path:
        rel = mount.path.lstrip("/")
        if not rel or ".." in rel.split("/"):
            raise VolumeError(f"volume {mount.volume!r}: mount path {mount.path!r} is invalid")
        return self._root / PurePosixPath(rel)

    def _mount_one(self, mount: Mount) -> None:
        volume = self._volumes.get(mount.volume)
        if volume is None:
            raise VolumeError(f"volume {mount.volume!r}: mounted but not in the pod's volumes")
        target = self._target(mount)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if mount.sub_path and volume.files is not None:
                self._place_copy(mount, target)
            else:
                self._place_link(mount, volume, target)
        except OSError as err:
            raise VolumeError(
                f"volume {mount.volume!r}: cannot mount at {mount.path}: {err}"
            ) from err

    def _place_copy(self, mount: Mount, target: Path) -> None:
        """A files volume's subPath: a copy of the file or directory as it is now."""
        assert self._placed is not None
        sub = _relative(mount.sub_path, "subPath", mount.volume)
        key = [mount.volume, str(sub)]
        if self._placed.get(str(target)) == key and os.path.lexists(target):
            return
        source = (self._dirs[mount.volume] / sub).resolve()
        if not source.exists():
            raise VolumeError(f"volume {mount.volume!r}: subPath {mount.sub_path!r} not found")
        _make_room(target, mount.volume)
        _copy(source, target)
        if mount.read_only:
            _read_only_tree(target)
        self._placed[str(target)] = key
        self._save_record()

    def _place_link(self, mount: Mount, volume: Volume, target: Path) -> None:
        """A symlink to the volume (or, for an emptyDir's subPath, to that directory in it)."""
        dest = self._dirs[mount.volume]
        if mount.sub_path:
            sub = _relative(mount.sub_path, "subPath", mount.volume)
            dest = dest / sub
            dest.mkdir(parents=True, exist_ok=True)
            if not dest.resolve().is_relative_to(self._dirs[mount.volume].resolve()):
                raise VolumeError(f"volume {mount.volume!r}: subPath {sub} leaves the volume")
        if _readlink(target) != str(dest):
            assert self._placed is not None
            if str(target) not in self._placed or not target.is_symlink():
                _make_room(target, mount.volume)
            _symlink(target, dest)  # (replacing a link of ours to elsewhere)
            self._placed[str(target)] = [mount.volume, mount.sub_path]
            self._save_record()
        if volume.files is None and not mount.sub_path:
            self._empty_dir_mode(mount)

    def _empty_dir_mode(self, mount: Mount) -> None:
        """0555 while no mount of the emptyDir writes to it, 0777 once one does."""
        if not mount.read_only:
            self._writable.add(mount.volume)
        mode = EMPTY_DIR_MODE if mount.volume in self._writable else READ_ONLY_DIR_MODE
        self._dirs[mount.volume].chmod(mode)

    # -- limits ------------------------------------------------------------------------------

    def over_limit(self) -> list[str]:
        """One message per emptyDir over its sizeLimit, in the kubelet's eviction words.
        Walks the trees: call it from a thread (``trio.to_thread.run_sync``)."""
        messages = []
        for name, volume in list(self._volumes.items()):
            if volume.files is not None or volume.size_limit is None:
                continue
            if _tree_size(self._dirs[name]) > volume.size_limit:
                messages.append(
                    f'Usage of EmptyDir volume "{name}" exceeds the limit '
                    f'"{_quantity(volume.size_limit)}".'
                )
        return messages
