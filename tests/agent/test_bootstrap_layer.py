"""The bootstrap fetching the agent from an image layer, run by the host's ``sh`` against the
registry simulator (Bearer auth): the anonymous token it asks itself, the download, the
SHA-256 check and the unpacking, with each downloader (curl, wget, python3) and with nothing
but busybox. Also what the node reads to tell it where the layer is
(``RegistryClient.image_layers``), and a private image, which it cannot tell."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import trio

from vk_trio.agent.bootstrap import (
    AGENT_LAYER_ENV,
    AGENT_LAYER_SHA256_ENV,
    AGENT_TOKEN_URL_ENV,
    NOT_UNPACKED,
    SCRIPT,
    WRONG_CHECKSUM,
)
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.registry import IMAGE_UNAUTHORIZED, ImageConfigUnavailable, RegistryClient

AGENT = b'#!/bin/sh\necho "agent ran: $*"\n'
COMMON = ("sh", "sed", "head", "mkdir", "rm", "mv", "chmod", "sleep", "sha256sum", "cat")


def layer(members: dict[str, bytes], *, prefix: str = "") -> bytes:
    """A gzip'd tar as the node image's single layer is (``/tmp`` and friends beside)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        folder = tarfile.TarInfo(prefix + "tmp")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(folder)
        for name, content in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def tools(tmp_path: Path, names: tuple[str, ...]) -> str:
    """A PATH holding only ``names`` (links to the host's), so one downloader is there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        # python3: this interpreter, not a shim (pyenv's are bash scripts)
        found = os.path.realpath(sys.executable) if name == "python3" else shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed here")
        (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def busybox_only(tmp_path: Path) -> str:
    found = shutil.which("busybox")
    if found is None:
        pytest.skip("busybox is not installed here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (*COMMON, "wget", "tar", "gzip", "busybox"):
        (bin_dir / name).symlink_to(found)
    return str(bin_dir)


async def bootstrap(
    registry: RegistrySim, image: str, path: str, tmp_path: Path
) -> subprocess.CompletedProcess[bytes]:
    async with RegistryClient() as client:
        found = await client.image_layers(f"{registry.host}/{image}")
    last = found.layers[-1]
    env = {
        "PATH": path,
        "VK_TRIO_AGENT_DIR": str(tmp_path / "agent"),
        AGENT_LAYER_ENV: found.url(last),
        AGENT_LAYER_SHA256_ENV: last.digest.removeprefix("sha256:"),
        AGENT_TOKEN_URL_ENV: found.token_url,
    }
    with trio.fail_after(30):
        return await trio.run_process(
            [os.path.join(path, "sh"), "-c", SCRIPT],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.parametrize(
    "fetcher", [("curl", "tar", "gzip"), ("wget", "tar", "gzip"), ("python3",)], ids=str
)
async def test_the_agent_is_fetched_with_a_token_checked_and_unpacked(
    registry_sim: RegistrySim, tmp_path: Path, fetcher: tuple[str, ...]
) -> None:
    registry_sim.add_image("vk-trio", "1", {"config": {}}, [layer({"vk-trio": AGENT})])
    path = tools(tmp_path, (*COMMON, *fetcher))
    before = registry_sim.requests["token"]
    done = await bootstrap(registry_sim, "vk-trio:1", path, tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"agent ran: agent\n"
    assert registry_sim.requests["token"] >= before + 2  # the node's, then the bootstrap's own
    assert sorted(os.listdir(tmp_path / "agent")) == ["vk-trio"]


async def test_busybox_alone_is_enough_and_a_dot_slash_member_is_found(
    registry_sim: RegistrySim, tmp_path: Path
) -> None:
    registry_sim.add_image("vk-trio", "1", {"config": {}}, [layer({"vk-trio": AGENT}, prefix="./")])
    done = await bootstrap(registry_sim, "vk-trio:1", busybox_only(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"agent ran: agent\n"


async def test_a_layer_that_is_not_its_digest_is_refused_before_it_runs(
    registry_sim: RegistrySim, tmp_path: Path
) -> None:
    built = registry_sim.add_image("vk-trio", "1", {"config": {}}, [layer({"vk-trio": AGENT})])
    registry_sim.tamper_blob(built.layers[-1], layer({"vk-trio": b"#!/bin/sh\necho evil\n"}))
    path = tools(tmp_path, (*COMMON, "curl", "tar", "gzip"))
    done = await bootstrap(registry_sim, "vk-trio:1", path, tmp_path)
    assert done.returncode == WRONG_CHECKSUM
    assert b"evil" not in done.stdout
    assert b"has SHA-256" in done.stderr


async def test_a_layer_without_the_agent_says_so(registry_sim: RegistrySim, tmp_path: Path) -> None:
    registry_sim.add_image("vk-trio", "1", {"config": {}}, [layer({"other": AGENT})])
    path = tools(tmp_path, (*COMMON, "curl", "tar", "gzip", "python3"))
    done = await bootstrap(registry_sim, "vk-trio:1", path, tmp_path)
    assert done.returncode == NOT_UNPACKED, done.stderr.decode()


async def test_the_layers_of_a_private_image_are_not_told(registry_sim: RegistrySim) -> None:
    registry_sim.add_image("secret/vk-trio", "1", {"config": {}}, [b"x"], private=True)
    async with RegistryClient() as client:
        with pytest.raises(ImageConfigUnavailable) as caught:
            await client.image_layers(f"{registry_sim.host}/secret/vk-trio:1")
    assert caught.value.reason == IMAGE_UNAUTHORIZED
