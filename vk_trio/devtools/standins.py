"""Stand-in images for ``vk-trio demo``: what the examples' images run in the Vast simulator's
sandbox (``--run-containers``), since the real ones cannot run here.

The examples name ``vllm/vllm-openai``, ``ghcr.io/coqui-ai/tts`` and ``nvidia/cuda``: gigabytes
each, from registries the demo does not reach, needing a GPU. Each gets, in the demo's
temporary folder, a small root (:func:`vk_trio.devtools.images.shell_root`: a shell and the
usual tools) holding a stand-in ``nvidia-smi`` (a ``sh`` script printing a table for the
instance's GPU, from the simulator's ``VK_SIM_*`` variables: ``containers.gpu_env``), and an
image config whose ENTRYPOINT answers HTTP on the ports the image's server would
(``sim/vast/standin_app.py``). The pod's own ``command``/``args`` keep their meaning: a pod
with a command runs it (``nvidia-smi && sleep infinity``), args go after the ENTRYPOINT.

The node reads the same configs through :class:`SimImageConfigs` (``serve_node(images=...)``)
for the pods the agent runs, as it would read them from the images' registries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vk_trio.devtools.images import shell_root
from vk_trio.devtools.sim.vast.images import best_match
from vk_trio.registry import IMAGE_NOT_FOUND, ImageConfigUnavailable
from vk_trio.registry.models import ImageConfig

__all__ = ["NVIDIA_SMI", "SERVERS", "SimImageConfigs", "make_standins"]

APP = Path(__file__).with_name("sim") / "vast" / "standin_app.py"

SERVERS: dict[str, str] = {
    "vllm/vllm-openai": "8000",
    "ghcr.io/coqui-ai/tts": "8000,8001",
}
"""Image → the ports its stand-in answers on (the ports the examples publish)."""

PLAIN = ("nvidia/cuda",)
"""Images whose pods say what to run: a root with ``nvidia-smi``, no ENTRYPOINT."""

NVIDIA_SMI = r"""#!/bin/sh
# vk-trio demo: a stand-in nvidia-smi. The simulator's sandbox has no GPU; it tells the
# process what the instance's machine has in VK_SIM_* variables, printed here as the real
# tool's table (memory idle, no processes).
name="NVIDIA ${VK_SIM_GPU_NAME:-GPU}"
count="${VK_SIM_NUM_GPUS:-1}"
memory="${VK_SIM_GPU_RAM_MB:-0}"
driver="${VK_SIM_DRIVER_VERSION:-550.54.15}"
cuda="${VK_SIM_CUDA_VERSION:-12.4}"
rule="+-------------------------------+----------------------+----------------------+"
printf '%s\n' "$(date 2>/dev/null)"
printf '+-----------------------------------------------------------------------------+\n'
printf '| NVIDIA-SMI %-12s Driver Version: %-12s CUDA Version: %-9s|\n' \
  "$driver" "$driver" "$cuda"
printf '|-------------------------------+----------------------+----------------------+\n'
printf '| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |\n'
printf '| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |\n'
printf '|===============================+======================+======================|\n'
i=0
while [ "$i" -lt "$count" ]; do
  printf '| %3d  %-19.19s On   | 00000000:%02X:00.0 Off |                  N/A |\n' \
    "$i" "$name" $((i + 1))
  printf '| 30%%   34C    P8    21W / 350W | %6sMiB / %5sMiB |      0%%      Default |\n' \
    1 "$memory"
  printf '%s\n' "$rule"
  i=$((i + 1))
done
printf 'No running processes found\n'
"""


def make_standins(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Make the stand-in images under ``folder``: ``(image_roots, image_configs)`` for
    ``VastSimConfig``. One root serves every image (they differ only in their config)."""
    root = shell_root(folder / "root")
    smi = root / "bin" / "nvidia-smi"
    smi.write_text(NVIDIA_SMI)
    smi.chmod(0o755)
    roots = {image: str(root) for image in (*SERVERS, *PLAIN)}
    configs = {}
    for image, ports in SERVERS.items():
        path = folder / (image.replace("/", "_") + ".json")
        path.write_text(json.dumps(_server_config(image, ports), indent=1) + "\n")
        configs[image] = str(path)
    return roots, configs


def _server_config(image: str, ports: str) -> dict[str, Any]:
    """The image config whose ENTRYPOINT is the stand-in app on ``ports`` (the pod's args
    follow the ``--``), run by path with this interpreter (bound in every sandbox)."""
    entrypoint = [sys.executable, "-I", str(APP), "--name", image, "--ports", ports, "--"]
    return {"config": {"Entrypoint": entrypoint, "Cmd": [], "Env": [], "WorkingDir": "/"}}


class SimImageConfigs:
    """The node's image configs from the simulator's (``VastSim.image_configs()``): for the
    pods the agent runs without a command, what their registries would say. An image with
    no config here is "not found", as a registry would answer for an unknown name."""

    def __init__(self, documents: Mapping[str, Any]) -> None:
        self._documents = dict(documents)

    async def image_config(
        self, image: str, *, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageConfig:
        name = best_match(self._documents, image)
        if name is None:
            raise ImageConfigUnavailable(
                f"no stand-in config for {image}", image=image, reason=IMAGE_NOT_FOUND
            )
        config = self._documents[name].get("config") or {}
        return ImageConfig(
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            env=list(config.get("Env") or []),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
            digest="sha256:" + "0" * 64,
        )
