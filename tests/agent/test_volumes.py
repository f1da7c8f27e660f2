"""The pod's volumes on real files: the atomic writer, symlink mounts, subPath copies."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import trio

from vk_trio.agent import volumes as volumes_module
from vk_trio.agent.protocol import Mount, Volume, VolumeFile
from vk_trio.agent.volumes import VolumeError, Volumes


def config(files: dict[str, bytes] | None = None, /, **more: bytes) -> Volume:
    every = {**(files or {}), **more}
    return Volume(name="config", files=[VolumeFile(path=p, data=d) for p, d in every.items()])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def vols(tmp_path: Path, root: Path) -> Volumes:
    return Volumes(root, tmp_path / "state", shm=tmp_path / "shm")


def lexists(path: Path) -> bool:
    return os.path.lexists(path)


def asides(root: Path) -> list[Path]:
    return list(root.rglob("*.vk-trio-orig"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_files_volume_has_the_atomic_writers_layout(vols: Volumes, tmp_path: Path) -> None:
    await vols.make([config({"app.conf": b"a=1", "nested/deep/key": b"k"})])
    vol = tmp_path / "state" / "volumes" / "config"
    data = os.readlink(vol / "..data")
    assert data.startswith("..20") and len(data.split(".")[-1]) == 9
    assert os.readlink(vol / "app.conf") == "..data/app.conf"
    assert os.readlink(vol / "nested") == "..data/nested"
    assert (vol / "nested" / "deep" / "key").read_bytes() == b"k"
    assert sorted(p.name for p in vol.iterdir()) == sorted(["..data", data, "app.conf", "nested"])


async def test_items_keep_their_modes(vols: Volumes, tmp_path: Path) -> None:
    volume = Volume(
        name="secret",
        files=[
            VolumeFile(path="tls/key.pem", data=b"k", mode=0o400),
            VolumeFile(path="run.sh", data=b"#!", mode=0o755),
        ],
    )
    await vols.make([volume])
    vol = tmp_path / "state" / "volumes" / "secret"
    assert mode(vol / "tls" / "key.pem") == 0o400
    assert mode(vol / "run.sh") == 0o755


async def test_update_swaps_in_one_rename_seen_through_the_mount(
    vols: Volumes, root: Path, tmp_path: Path
) -> None:
    await vols.make([config(a=b"old", gone=b"x")])
    await vols.mount([Mount(volume="config", path="/etc/app")])
    assert (root / "etc" / "app" / "a").read_bytes() == b"old"
    vol = tmp_path / "state" / "volumes" / "config"
    before = os.readlink(vol / "..data")

    seen: set[tuple[bytes, bool]] = set()
    stop = threading.Event()

    def reader() -> None:
        # Every view through one ``..data`` is (old, gone present) or (new, gone absent):
        # never a mix. A view whose directory was swapped out while it read is discarded
        # (the old directory is removed after the swap), as a watcher would re-read.
        while not stop.is_set():
            target = os.readlink(vol / "..data")
            try:
                view = ((vol / target / "a").read_bytes(), (vol / target / "gone").exists())
            except FileNotFoundError:
                continue
            if os.readlink(vol / "..data") == target:
                seen.add(view)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            await vols.update(config({"a": b"new"} if i % 2 else {"a": b"old", "gone": b"x"}))
    finally:
        stop.set()
        thread.join()
    assert seen <= {(b"old", True), (b"new", False)}
    await vols.update(config(a=b"new"))
    assert (root / "etc" / "app" / "a").read_bytes() == b"new"
    assert not (root / "etc" / "app" / "gone").exists()
    assert not lexists(vol / "gone")
    assert not (vol / before).exists()
    assert len([p for p in vol.iterdir() if p.name.startswith("..2")]) == 1


async def test_an_unchanged_update_writes_nothing(vols: Volumes, tmp_path: Path) -> None:
    await vols.make([config(a=b"1")])
    link = tmp_path / "state" / "volumes" / "config" / "..data"
    before = os.readlink(link)
    await vols.update(config(a=b"1"))
    assert os.readlink(link) == before


async def test_sub_path_copy_is_not_updated(vols: Volumes, root: Path) -> None:
    await vols.make([config({"app.conf": b"v1", "dir/x": b"x1"})])
    await vols.mount(
        [
            Mount(volume="config", path="/etc/app.conf", sub_path="app.conf"),
            Mount(volume="config", path="/opt/dir", sub_path="dir", read_only=True),
        ]
    )
    file = root / "etc" / "app.conf"
    assert not file.is_symlink() and file.read_bytes() == b"v1"
    assert not (root / "opt" / "dir").is_symlink()
    assert mode(root / "opt" / "dir") == 0o555
    assert mode(root / "opt" / "dir" / "x") == 0o444
    await vols.update(config({"app.conf": b"v2", "dir/x": b"x2"}))
    assert file.read_bytes() == b"v1"
    assert (root / "opt" / "dir" / "x").read_bytes() == b"x1"
    # A remount (the node reconnected) keeps the copies as they are.
    await vols.mount([Mount(volume="config", path="/etc/app.conf", sub_path="app.conf")])
    assert file.read_bytes() == b"v1"


async def test_sub_path_that_does_not_exist(vols: Volumes) -> None:
    await vols.make([config(a=b"1")])
    with pytest.raises(VolumeError, match=r"'config'.*not found"):
        await vols.mount([Mount(volume="config", path="/x", sub_path="b")])


async def test_empty_dir_shared_by_several_mounts_and_sub_path(
    vols: Volumes, root: Path, tmp_path: Path
) -> None:
    await vols.make([Volume(name="scratch")])
    vol = tmp_path / "state" / "volumes" / "scratch"
    assert mode(vol) == 0o777
    await vols.mount(
        [
            Mount(volume="scratch", path="/data"),
            Mount(volume="scratch", path="/other/place"),
            Mount(volume="scratch", path="/cache", sub_path="a/b"),
        ]
    )
    (root / "data" / "f").write_text("hi")
    assert (root / "other" / "place" / "f").read_text() == "hi"
    (root / "cache" / "c").write_text("c")
    assert (vol / "a" / "b" / "c").read_text() == "c"


async def test_remount_is_idempotent(vols: Volumes, root: Path) -> None:
    await vols.make([Volume(name="scratch"), config(a=b"1")])
    mounts = [Mount(volume="scratch", path="/data"), Mount(volume="config", path="/etc/c")]
    await vols.mount(mounts)
    (root / "data" / "kept").write_text("x")
    await vols.make([Volume(name="scratch"), config(a=b"1")])
    await vols.mount(mounts)
    assert (root / "data" / "kept").read_text() == "x"
    assert not asides(root)


async def test_what_the_image_has_at_the_path_is_moved_aside(vols: Volumes, root: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "image-file").write_text("image")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("image conf")
    (root / "empty").mkdir()
    await vols.make([Volume(name="scratch"), config(a=b"1")])
    await vols.mount(
        [
            Mount(volume="scratch", path="/data"),
            Mount(volume="config", path="/etc/conf"),
            Mount(volume="scratch", path="/empty", sub_path="e"),
        ]
    )
    assert (root / "data").is_symlink()
    assert (root / "data.vk-trio-orig" / "image-file").read_text() == "image"
    assert (root / "etc" / "conf.vk-trio-orig").read_text() == "image conf"
    assert (root / "etc" / "conf" / "a").read_bytes() == b"1"
    assert (root / "empty").is_symlink()
    assert not (root / "empty.vk-trio-orig").exists()


async def test_both_the_path_and_its_aside_taken(vols: Volumes, root: Path) -> None:
    (root / "data").write_text("x")
    (root / "data.vk-trio-orig").write_text("y")
    await vols.make([Volume(name="scratch")])
    with pytest.raises(VolumeError, match=r"'scratch'.*taken"):
        await vols.mount([Mount(volume="scratch", path="/data")])


async def test_nested_mounts_land_inside_the_outer_volume(
    vols: Volumes, root: Path, tmp_path: Path
) -> None:
    await vols.make([Volume(name="outer"), config(a=b"1")])
    await vols.mount([Mount(volume="config", path="/w/conf"), Mount(volume="outer", path="/w")])
    assert (root / "w" / "conf" / "a").read_bytes() == b"1"
    assert (tmp_path / "state" / "volumes" / "outer" / "conf").is_symlink()


async def test_read_only_empty_dir_until_a_mount_writes(vols: Volumes, tmp_path: Path) -> None:
    await vols.make([Volume(name="scratch")])
    vol = tmp_path / "state" / "volumes" / "scratch"
    await vols.mount([Mount(volume="scratch", path="/ro", read_only=True)])
    assert mode(vol) == 0o555
    await vols.mount([Mount(volume="scratch", path="/rw")])
    assert mode(vol) == 0o777


async def test_memory_empty_dir_on_shm(
    vols: Volumes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shm").mkdir()
    monkeypatch.setattr(volumes_module, "_is_tmpfs", lambda path: path == tmp_path / "shm")
    await vols.make([Volume(name="mem", medium="Memory")])
    link = tmp_path / "state" / "volumes" / "mem"
    assert os.readlink(link) == str(tmp_path / "shm" / "vk-trio" / "mem")
    assert (tmp_path / "shm" / "vk-trio" / "mem").is_dir()


async def test_memory_empty_dir_without_tmpfs_is_on_disk(
    vols: Volumes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volumes_module, "_is_tmpfs", lambda path: False)
    await vols.make([Volume(name="mem", medium="Memory")])
    path = tmp_path / "state" / "volumes" / "mem"
    assert path.is_dir() and not path.is_symlink()


def test_is_tmpfs_reads_the_mount_table() -> None:
    assert not volumes_module._is_tmpfs(Path("/definitely/not/a/mount"))
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        table = Path("/proc/self/mounts").read_text()
        assert volumes_module._is_tmpfs(Path("/dev/shm")) == (" /dev/shm tmpfs " in table)


@pytest.mark.parametrize(
    ("written", "limit", "over"),
    [(2000, 1000, True), (500, 1000, False), (1000, 1000, False), (2048, 1024, True)],
    ids=["over", "under", "exactly", "quantity"],
)
async def test_size_limit(vols: Volumes, root: Path, written: int, limit: int, over: bool) -> None:
    await vols.make([Volume(name="scratch", size_limit=limit), Volume(name="free")])
    await vols.mount([Mount(volume="scratch", path="/s"), Mount(volume="free", path="/f")])
    (root / "s" / "sub").mkdir()
    (root / "s" / "sub" / "blob").write_bytes(b"x" * (written // 2))
    (root / "s" / "blob").write_bytes(b"x" * (written - written // 2))
    (root / "f" / "big").write_bytes(b"x" * 10_000)
    messages = await trio.to_thread.run_sync(vols.over_limit)
    if over:
        shown = "1Ki" if limit == 1024 else str(limit)
        assert messages == [f'Usage of EmptyDir volume "scratch" exceeds the limit "{shown}".']
    else:
        assert messages == []


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../escape", "a/../../b", "..data/x", "..hidden", "./..data", "", "a/.."],
    ids=[
        "absolute",
        "dotdot",
        "inner-dotdot",
        "data",
        "leading-dotdot",
        "dot-data",
        "empty",
        "trailing",
    ],
)
async def test_bad_paths_are_refused(vols: Volumes, path: str) -> None:
    with pytest.raises(VolumeError, match="volume 'config'"):
        await vols.make([config({path: b"x"})])


async def test_file_and_directory_clash(vols: Volumes) -> None:
    with pytest.raises(VolumeError, match="both a file and a directory"):
        await vols.make([config({"a": b"1", "a/b": b"2"})])


@pytest.mark.parametrize(
    "mount",
    [
        Mount(volume="scratch", path="/"),
        Mount(volume="scratch", path="/a/../../etc"),
        Mount(volume="scratch", path="/x", sub_path="../up"),
        Mount(volume="nope", path="/x"),
    ],
    ids=["root", "dotdot-path", "dotdot-sub-path", "unknown-volume"],
)
async def test_bad_mounts_are_refused(vols: Volumes, mount: Mount) -> None:
    await vols.make([Volume(name="scratch")])
    with pytest.raises(VolumeError):
        await vols.mount([mount])


async def test_update_of_an_empty_dir_is_refused(vols: Volumes) -> None:
    with pytest.raises(VolumeError, match="emptyDir"):
        await vols.update(Volume(name="scratch"))


async def test_a_new_agent_remounts_over_its_own_links(tmp_path: Path, root: Path) -> None:
    """The agent restarted in the same container with another state directory: its old
    links are replaced, not moved aside as if they were the image's."""
    first = Volumes(root, tmp_path / "state", shm=tmp_path / "shm")
    await first.make([Volume(name="scratch")])
    await first.mount([Mount(volume="scratch", path="/data")])
    (tmp_path / "state" / "mounts.json").rename(tmp_path / "mounts.json")
    (tmp_path / "state").rename(tmp_path / "old-state")
    (tmp_path / "state").mkdir()
    (tmp_path / "mounts.json").rename(tmp_path / "state" / "mounts.json")
    second = Volumes(root, tmp_path / "state", shm=tmp_path / "shm")
    await second.make([Volume(name="scratch")])
    await second.mount([Mount(volume="scratch", path="/data")])
    assert os.readlink(root / "data") == str(tmp_path / "state" / "volumes" / "scratch")
    assert not asides(root)
