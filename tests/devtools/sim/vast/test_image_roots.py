"""``--image-root`` and ``--image-config``: an instance runs in its image's own root
filesystem (a shell root, a one-binary "distroless" root made here), read-only under a
writable layer, with the image's ENTRYPOINT, CMD, ENV and WORKDIR, and the registry
simulator serves the same config to the node's registry client.

The roots come from ``vk_trio.devtools.images``: a static busybox's when one is installed
(``apt-get install busybox-static``; ``.ci/run`` installs it), else copies of the host's own
tools and libraries, so these run on any machine with ``unshare`` (the same rule as
``test_containers.py``: skipped only without it; without user namespaces they fail).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.devtools.sim.vast.test_containers import FAST, containers_sim, exited, logs
from tests.devtools.sim.vast.test_server import api, buy, status_of
from tests.plugins.vast_sim import VastSimFactory
from vk_trio.devtools.images import (
    find_busybox,
    host_tools_root,
    shell_root,
    single_binary_root,
)
from vk_trio.devtools.sim.registry import RegistrySim
from vk_trio.devtools.sim.vast import add_arguments, config_from_args
from vk_trio.devtools.sim.vast.agent import agent_bytes
from vk_trio.devtools.sim.vast.containers import container_argv, container_env
from vk_trio.devtools.sim.vast.images import OciConfig, best_match, resolve_image
from vk_trio.devtools.sim.vast.sandbox import python_runtime, unshare_command
from vk_trio.registry import RegistryClient

pytestmark = pytest.mark.skipif(
    unshare_command() is None, reason="needs util-linux unshare (apt-get install util-linux)"
)

TOOL_CONFIG: dict[str, Any] = {
    "config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ['echo "mode=$MODE greeting=$GREETING pwd=$(pwd)"; cat /app/motd'],
        "Env": ["MODE=image", "GREETING=from-image", "PATH=/bin"],
        "WorkingDir": "/app",
        "User": "0",
    }
}


@pytest.fixture
def tool_root(tmp_path: Path) -> Path:
    """A shell root with a file only it has (``/app/motd``) and its own /etc."""
    root = shell_root(tmp_path / "tool")
    (root / "app").mkdir()
    (root / "app" / "motd").write_text("only in the tool image\n")
    (root / "etc").mkdir()
    (root / "etc" / "image-release").write_text("tool 1.0\n")
    return root


def parse(*flags: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["--run-containers", *flags]))


def test_names_match_with_or_without_their_tag_and_the_longest_wins() -> None:
    names = ["example.com/tool", "example.com/tool:1.0", "127.0.0.1:5000/tool"]
    assert best_match(names, "example.com/tool:1.0") == "example.com/tool:1.0"
    assert best_match(names, "example.com/tool:2.0") == "example.com/tool"
    assert best_match(names, "example.com/tool") == "example.com/tool"
    assert best_match(names, "example.com/tool@sha256:ab") == "example.com/tool"
    assert best_match(names, "example.com/toolbox:1.0") is None
    assert best_match(names, "127.0.0.1:5000/tool") == "127.0.0.1:5000/tool"
    assert best_match(["example.com/tool:latest"], "example.com/tool") == "example.com/tool:latest"
    assert best_match(["example.com/tool:1.0"], "example.com/tool:1.01") is None


def test_argv_and_env_follow_docker_on_the_image_config() -> None:
    image = OciConfig(entrypoint=["/e"], cmd=["c1"], env=["A=image", "PATH=/bin", "B=x=y"])
    assert container_argv({}, image) == ["/e", "c1"]
    assert container_argv({"args": ["a1"]}, image) == ["/e", "a1"]
    assert container_argv({"onstart": "sh", "args": ["-c", "x"]}, image) == ["sh", "-c", "x"]
    assert container_argv({}, OciConfig(cmd=["c1"])) == ["c1"]
    env = container_env({"env": {"A": "create", "-p 80:80": "1"}}, "C.1", image)
    assert env == {"PATH": "/bin", "HOME": "/root", "A": "create", "B": "x=y", "HOSTNAME": "C.1"}


def test_flags_and_a_bad_config_file(tool_root: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(TOOL_CONFIG))
    config = parse(f"--image-root=example.com/tool={tool_root}", f"--image-config=x={config_file}")
    assert config.image_roots == {"example.com/tool": str(tool_root)}
    assert config.image_configs == {"x": str(config_file)}
    root, image = resolve_image("x:3", config.image_roots, config.image_configs)
    assert root is None and image.working_dir == "/app"
    with pytest.raises(ValueError, match="not a directory"):
        parse(f"--image-root=a={tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="NAME=FILE"):
        parse("--image-config=a")
    config_file.write_text('{"config": {"Entrypoint": "not a list"}}')
    with pytest.raises(ValueError):
        parse(f"--image-config=x={config_file}")


async def test_the_process_sees_the_image_and_none_of_the_host(
    vast_sim_factory: VastSimFactory, tool_root: Path
) -> None:
    sim = await containers_sim(vast_sim_factory, image_roots={"example.com/tool": str(tool_root)})
    host_only = ["/usr/bin/env", "/usr/share", "/etc/os-release", "/bin/bash"]
    if "/usr/bin/python3" not in python_runtime():  # the agent's stand-in (sandbox.py)
        host_only.append("/usr/bin/python3")
    script = (
        "cat /app/motd /etc/image-release; cat /etc/hostname; "
        f"for f in {' '.join(host_only)}; do [ -e $f ] && echo HOST $f; done; "
        "echo new > /etc/app.conf && cat /etc/app.conf; "
        "mkdir /data && echo x > /data/x && cat /data/x; echo t > /tmp/t && cat /tmp/t; "
        "(echo no >> /app/motd) 2>/dev/null || echo motd read-only; "
        "rm /bin/sh 2>/dev/null || echo bin read-only; "
        "touch /app/new 2>/dev/null || echo app read-only; "
        "[ -e /.vk-trio-image-config.json ] || echo no config file inside; echo done"
    )
    async with api(sim) as client:
        instance_id = await buy(
            sim, client, image="example.com/tool:1.0", onstart="sh", args=["-c", script]
        )
        row = await exited(sim, instance_id)
        text = await logs(client, instance_id)
        assert row["status_msg"] == "Container exited with code 0", text
        assert text.splitlines() == [
            "only in the tool image",
            "tool 1.0",
            f"C.{instance_id}",
            "new",
            "x",
            "t",
            "motd read-only",
            "bin read-only",
            "app read-only",
            "no config file inside",
            "done",
        ]
    assert (tool_root / "app" / "motd").read_text() == "only in the tool image\n"
    assert not (tool_root / "data").exists() and not (tool_root / "etc" / "app.conf").exists()


async def test_without_onstart_the_image_entrypoint_runs_with_its_env_and_workdir(
    vast_sim_factory: VastSimFactory, tool_root: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "tool.json"
    config_file.write_text(json.dumps(TOOL_CONFIG))
    sim = await containers_sim(
        vast_sim_factory,
        image_roots={"example.com/tool": str(tool_root)},
        image_configs={"example.com/tool": str(config_file)},
    )
    async with api(sim) as client:
        with_cmd = await buy(sim, client, image="example.com/tool:1.0", env={"MODE": "create"})
        with_args = await buy(
            sim, client, image="example.com/tool", args=["echo args replace CMD in $(pwd)"]
        )
        assert (await exited(sim, with_cmd))["status_msg"] == "Container exited with code 0"
        assert (await logs(client, with_cmd)).splitlines() == [
            "mode=create greeting=from-image pwd=/app",
            "only in the tool image",
        ]
        await exited(sim, with_args)
        assert (await logs(client, with_args)).splitlines() == ["args replace CMD in /app"]


async def test_a_root_without_sh_fails_an_onstart_sh_as_vast_does(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    busybox = find_busybox()
    if busybox is not None:  # one static file
        config = {"config": {"Entrypoint": ["/app/busybox", "echo"], "Cmd": ["distroless ok"]}}
        root = single_binary_root(tmp_path / "distroless", busybox, "/app/busybox", config)
        files = sorted(p.name for p in root.rglob("*"))
        assert files == [".vk-trio-image-config.json", "app", "busybox"]
    else:  # the host's echo with its C library, as a distroless image carries one
        config = {"config": {"Entrypoint": ["/app/server"], "Cmd": ["distroless ok"]}}
        echo = shutil.which("echo")
        assert echo is not None
        root = single_binary_root(
            tmp_path / "distroless", echo, "/app/server", config, libraries=True
        )
    assert not [p for p in root.rglob("*") if p.name in ("sh", "dash", "bash")]
    sim = await containers_sim(vast_sim_factory, image_roots={"example.com/server": str(root)})
    async with api(sim) as client:
        shell = await buy(
            sim, client, image="example.com/server:2", onstart="sh", args=["-c", "echo hi"]
        )
        own = await buy(sim, client, image="example.com/server:2")
        with trio.fail_after(10):
            await sim.wait_until(
                lambda s: "OCI runtime" in str((s.instance(shell) or {})["status_msg"])
            )
        row = sim.instance(shell)
        assert row is not None and 'exec: "sh": executable file not found' in row["status_msg"]
        assert status_of(sim, shell) == "created"
        assert (await exited(sim, own))["status_msg"] == "Container exited with code 0"
        assert (await logs(client, own)).splitlines() == ["distroless ok"]


async def test_a_host_tools_root_has_what_the_bootstrap_uses(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    """Without busybox, ``shell_root`` is the host's tools copied with their libraries: made
    here explicitly, so that it is tested where busybox is installed too (CI)."""
    root = host_tools_root(tmp_path / "tools")
    assert not (root / "usr" / "bin").exists() and (root / "bin" / "sh").is_file()
    sim = await containers_sim(vast_sim_factory, image_roots={"example.com/tools": str(root)})
    script = (
        "mkdir -p /d && echo hi > /d/f && cat /d/f && sha256sum /d/f | head -c 8 && echo; "
        "chmod 0755 /d/f && mv /d/f /d/g && ls /d && sleep 0.01 && env >/dev/null && echo env; "
        "{ command -v wget || command -v curl; } >/dev/null && echo fetcher"
    )
    async with api(sim) as client:
        instance_id = await buy(
            sim, client, image="example.com/tools", onstart="sh", args=["-c", script]
        )
        row = await exited(sim, instance_id)
        text = await logs(client, instance_id)
        assert row["status_msg"] == "Container exited with code 0", text
        assert text.splitlines() == ["hi", "98ea6e4f", "g", "env", "fetcher"]


async def test_two_instances_on_two_roots_at_once(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    roots = {}
    for name in ("one", "two"):
        roots[f"example.com/{name}"] = str(shell_root(tmp_path / name))
        (tmp_path / name / "who").write_text(name + "\n")
    sim = await containers_sim(vast_sim_factory, image_roots=roots)
    wait = "cat /who; while [ ! -e /tmp/go ]; do sleep 0.05; done"
    async with api(sim) as client:
        ids = [
            await buy(sim, client, image=f"example.com/{name}:1", onstart="sh", args=["-c", wait])
            for name in ("one", "two")
        ]
        host = await buy(sim, client, image="other:1", onstart="sh", args=["-c", "cat /who || :"])
        with trio.fail_after(10):
            await sim.wait_until(lambda s: all(status_of(s, i) == "running" for i in ids))
            while not all([await logs(client, i) for i in ids]):  # noqa: ASYNC110 (a process)
                await trio.sleep(0.05)
        assert [await logs(client, i) for i in ids] == ["one\n", "two\n"]
        assert (await exited(sim, host))["status_msg"] == "Container exited with code 0"
        assert "/who" in await logs(client, host)  # the host's userland: no such file


async def test_the_agent_script_runs_in_a_shell_root(
    vast_sim_factory: VastSimFactory, tmp_path: Path
) -> None:
    """The simulator's stand-in agent (a ``sh`` script running the host's Python on this
    checkout) is downloaded with the root's wget or curl (busybox's, the host's, or a stand-in
    on the simulator's Python when the host has neither) and runs, as the bootstrap does."""
    root = shell_root(tmp_path / "bb")
    sim = await containers_sim(vast_sim_factory, image_roots={"bb": str(root)})
    script = (
        'if command -v wget >/dev/null; then wget -q -O /tmp/agent "$1/vk-trio/agent"; '
        'else curl -fsS -o /tmp/agent "$1/vk-trio/agent"; fi && chmod +x /tmp/agent && '
        "/tmp/agent --help | head -1"
    )
    assert sim.url is not None and agent_bytes().startswith(b"#!/bin/sh")
    async with api(sim) as client:
        instance_id = await buy(
            sim, client, image="bb", onstart="sh", args=["-c", script, "sh", sim.url]
        )
        row = await exited(sim, instance_id)
        text = await logs(client, instance_id)
        assert row["status_msg"] == "Container exited with code 0", text
        assert text.startswith("usage: vk-trio"), text


async def test_the_registry_simulator_serves_the_same_config(
    vast_sim_factory: VastSimFactory, registry_sim: RegistrySim, tool_root: Path
) -> None:
    name = f"{registry_sim.host}/tool"
    (tool_root / ".vk-trio-image-config.json").write_text(json.dumps(TOOL_CONFIG))
    sim = await vast_sim_factory(**FAST, image_roots={name: str(tool_root)})
    registry_sim.add_image_configs(sim.image_configs())
    async with RegistryClient() as client:
        config = await client.image_config(f"{name}:latest")
    assert config.entrypoint == TOOL_CONFIG["config"]["Entrypoint"]
    assert config.cmd == TOOL_CONFIG["config"]["Cmd"]
    assert config.env == TOOL_CONFIG["config"]["Env"]
    assert (config.working_dir, config.user) == ("/app", "0")
