"""Which image an instance runs (``--image-root``, ``--image-config``): its root filesystem
and its OCI config (ENTRYPOINT, CMD, ENV, WORKDIR, USER).

A create request names an image (``example.com/tool:1.0``); ``image_roots`` and
``image_configs`` map names to a directory and to a config file. A name matches the image
itself, or any tag or digest of it when the name has none: ``example.com/tool`` matches
``example.com/tool:1.0`` and ``example.com/tool@sha256:...``, ``example.com/tool:1.0`` only
that tag, and an image without tag or digest is ``:latest``. The longest matching name wins.

An image's config is its ``--image-config`` file, else the file ``IMAGE_CONFIG_FILE`` at the
top of its root; both hold the OCI image config's JSON form (``{"config": {"Entrypoint":
[...], "Cmd": [...], "Env": ["K=V"], "WorkingDir": "/app", "User": "1000"}}``), the same
document a registry serves, so that ``image_configs`` can hand them to the registry
simulator (``RegistrySim.add_image_configs``) and the node reads what the instance runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = [
    "IMAGE_CONFIG_FILE",
    "ImageConfigFile",
    "OciConfig",
    "best_match",
    "image_configs",
    "load_image_config",
    "resolve_image",
]

IMAGE_CONFIG_FILE = ".vk-trio-image-config.json"
"""An image root's own config; the sandbox does not show it inside (``launcher.py``)."""


class OciConfig(msgspec.Struct, rename="pascal", omit_defaults=True, frozen=True):
    """The part of an OCI image config the simulator uses (``User`` is only handed on: the
    sandbox maps uid 0 alone, so the process runs as root inside whatever it says)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None


class ImageConfigFile(msgspec.Struct, omit_defaults=True, frozen=True):
    """The file's document, as a registry stores an image config (other fields ignored)."""

    config: OciConfig | None = None


def _untagged(image: str) -> bool:
    """No ``:tag`` in the last path component and no ``@digest`` (a registry port is not a
    tag: ``127.0.0.1:5000/tool``)."""
    return "@" not in image and ":" not in image.rsplit("/", 1)[-1]


def matches(name: str, image: str) -> bool:
    """Whether ``name`` (``--image-root``/``--image-config``) names ``image``."""
    if _untagged(image):
        image += ":latest"
    if _untagged(name):
        return image.startswith((name + ":", name + "@"))
    return image == name


def best_match(names: Iterable[str], image: str) -> str | None:
    """The longest of ``names`` that matches ``image``, or None."""
    found = [name for name in names if matches(name, image)]
    return max(found, key=len) if found else None


def load_image_config(path: str) -> OciConfig:
    """The config in the file at ``path`` (``OSError``, ``msgspec.ValidationError``...)."""
    with open(path, "rb") as file:
        document = msgspec.json.decode(file.read(), type=ImageConfigFile)
    return document.config or OciConfig()


def resolve_image(
    image: str, roots: Mapping[str, str], configs: Mapping[str, str]
) -> tuple[str | None, OciConfig]:
    """The root directory (None: the host's userland) and config for ``image``."""
    root_name, config_name = best_match(roots, image), best_match(configs, image)
    root = roots[root_name] if root_name is not None else None
    if config_name is not None:
        return root, load_image_config(configs[config_name])
    if root is not None and os.path.isfile(os.path.join(root, IMAGE_CONFIG_FILE)):
        return root, load_image_config(os.path.join(root, IMAGE_CONFIG_FILE))
    return root, OciConfig()


def image_configs(roots: Mapping[str, str], configs: Mapping[str, str]) -> dict[str, Any]:
    """Image name → its config document (``{"config": {...}}``), from ``configs`` and the
    roots' own files: what a registry would serve for those names."""
    found: dict[str, Any] = {}
    for name, root in roots.items():
        path = os.path.join(root, IMAGE_CONFIG_FILE)
        if os.path.isfile(path):
            found[name] = load_image_config(path)
    for name, path in configs.items():
        found[name] = load_image_config(path)
    return {name: {"config": msgspec.to_builtins(config)} for name, config in sorted(found.items())}
