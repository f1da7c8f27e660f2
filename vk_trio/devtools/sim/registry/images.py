"""Images as a registry stores them: config blobs, layer blobs, image manifests, an index.

:func:`build_image` turns "this config, these layers" into the content-addressed documents a
registry serves, byte for byte what a push would have stored: one image config and one OCI
image manifest per platform (the same layers, ``architecture``/``os`` set per platform), and
an OCI index over them. Digests are computed over the exact bytes served, so a client that
checks them (``vk_trio.registry`` does) finds them right.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "CONFIG_TYPE",
    "DEFAULT_PLATFORMS",
    "INDEX_TYPE",
    "MANIFEST_TYPE",
    "BuiltImage",
    "build_image",
    "digest_of",
]

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
"""What most public images on Docker Hub publish today."""


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class BuiltImage:
    """One image's documents. ``digest`` is what its tag points at (the index's, or the one
    manifest's without an index); ``manifests`` and ``configs`` are by platform
    (``linux/amd64``)."""

    digest: str
    media_type: str
    manifests: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    documents: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Digest → (media type, bytes) of every manifest and the index."""
    blobs: dict[str, bytes] = field(default_factory=dict)
    """Digest → bytes of every config and layer."""


def build_image(
    config: Mapping[str, Any],
    layers: Sequence[bytes] = (),
    *,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    index: bool = True,
) -> BuiltImage:
    """The documents of an image whose config is ``config`` (the OCI config's JSON form,
    ``{"config": {"Entrypoint": [...], ...}}``) and whose layers are ``layers`` (gzip data is
    typed ``tar+gzip``, anything else ``tar``; they need not be real tarballs).

    ``index=False`` makes the first platform's manifest the image itself, with no index.
    """
    built = BuiltImage(digest="", media_type=INDEX_TYPE if index else MANIFEST_TYPE)
    descriptors = [_layer(built, data) for data in layers]
    diff_ids = [_diff_id(data) for data in layers]
    entries = []
    for platform in platforms if index else platforms[:1]:
        os_name, _, architecture = platform.partition("/")
        document = {
            **config,
            "architecture": architecture,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_bytes = msgspec.json.encode(document)
        config_digest = digest_of(config_bytes)
        built.blobs[config_digest] = config_bytes
        built.configs[platform] = config_digest
        manifest = _encode(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": _descriptor(CONFIG_TYPE, config_bytes),
                "layers": descriptors,
            }
        )
        built.documents[digest_of(manifest)] = (MANIFEST_TYPE, manifest)
        built.manifests[platform] = digest_of(manifest)
        entries.append(
            {
                **_descriptor(MANIFEST_TYPE, manifest),
                "platform": {"architecture": architecture, "os": os_name},
            }
        )
    if not index:
        built.digest = built.manifests[platforms[0]]
        return built
    index_bytes = _encode({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries})
    built.digest = digest_of(index_bytes)
    built.documents[built.digest] = (INDEX_TYPE, index_bytes)
    return built


def _encode(document: Mapping[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document), indent=3)


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def _layer(built: BuiltImage, data: bytes) -> dict[str, Any]:
    built.blobs[digest_of(data)] = data
    built.layers.append(digest_of(data))
    return _descriptor(LAYER_GZIP_TYPE if data[:2] == b"\x1f\x8b" else LAYER_TYPE, data)


def _diff_id(data: bytes) -> str:
    """The digest of the uncompressed layer, as the config's ``rootfs`` lists it."""
    if data[:2] == b"\x1f\x8b":
        try:
            return digest_of(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            pass
    return digest_of(data)
