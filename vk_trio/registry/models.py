"""The registry's JSON, typed: manifests and indexes, the image config, tokens, errors.

Decoding goes through msgspec with these types, so a malformed answer is an ``ImageInvalid``
at the boundary, not a ``KeyError`` further up. Only the fields vk-trio reads are declared;
everything else in the documents is ignored (the specs let registries add fields).
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "ACCEPT",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "ContainerConfig",
    "Descriptor",
    "ErrorBody",
    "ImageConfig",
    "ImageConfigFile",
    "ImageLayers",
    "Manifest",
    "Platform",
    "TokenReply",
]

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT: Final = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
"""Every manifest kind we read; none of the deprecated schema 1, which carries no config."""


class ImageConfig(msgspec.Struct, frozen=True):
    """What a kubelet would run for a container that sets no ``command``/``args``.

    Lists are as in the image (``[]`` when the image leaves them unset); ``env`` items are
    ``"KEY=VALUE"`` strings as the config stores them. ``digest`` is the digest the reference
    resolved to: the index's for a multi-platform image (what ``docker pull`` reports and what
    ``name@digest`` pins), else the image manifest's.
    """

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    working_dir: str
    user: str
    digest: str


class Platform(msgspec.Struct, frozen=True):
    architecture: str = ""
    os: str = ""
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


class Descriptor(msgspec.Struct, frozen=True, rename="camel"):
    digest: str
    media_type: str = ""
    size: int = 0
    platform: Platform | None = None


class Manifest(msgspec.Struct, frozen=True, rename="camel"):
    """An image manifest or an index (manifest list): which one is told by ``media_type``
    (the body's, else the response's ``Content-Type``) or by the presence of ``manifests``."""

    schema_version: int = 2
    media_type: str | None = None
    manifests: list[Descriptor] | None = None
    config: Descriptor | None = None
    layers: list[Descriptor] | None = None


class ImageLayers(msgspec.Struct, frozen=True):
    """Where an image's ``linux/amd64`` layers can be downloaded, for someone other than
    this process (an instance fetching the vk-trio agent from the node's own image).

    ``layers`` are the manifest's, base first (digest, media type, size: the digest is of
    the compressed blob, what a download is checked against). ``blob_url`` is the URL with
    ``{digest}`` to fill in (``https://<registry>/v2/<repository>/blobs/{digest}``, plain
    http only on loopback). ``token_url`` is where an anonymous pull token for the
    repository is had (realm, service and scope of the registry's challenge), or ``""`` when
    the registry asked for none. ``digest`` is the manifest's.
    """

    layers: list[Descriptor]
    blob_url: str
    token_url: str
    digest: str

    def url(self, layer: Descriptor) -> str:
        return self.blob_url.replace("{digest}", layer.digest)


class ContainerConfig(msgspec.Struct, frozen=True):
    """The ``config`` object of an image config (Docker's capitalised field names)."""

    Entrypoint: list[str] | None = None
    Cmd: list[str] | None = None
    Env: list[str] | None = None
    WorkingDir: str | None = None
    User: str | None = None


class ImageConfigFile(msgspec.Struct, frozen=True):
    """The config blob: ``application/vnd.oci.image.config.v1+json`` and Docker's
    equivalent; its ``config`` may be absent or null (a ``FROM scratch`` with nothing set)."""

    config: ContainerConfig | None = None


class TokenReply(msgspec.Struct, frozen=True):
    """A token server's answer: Docker's ``token`` or OAuth2's ``access_token``."""

    token: str | None = None
    access_token: str | None = None
    expires_in: int | None = None


class _ErrorItem(msgspec.Struct, frozen=True):
    code: str = ""
    message: str = ""


class ErrorBody(msgspec.Struct, frozen=True):
    """A distribution error response: ``{"errors": [{"code": ..., "message": ...}]}``."""

    errors: list[_ErrorItem] = []

    def summary(self) -> str:
        return "; ".join(f"{e.code}: {e.message}".strip(": ") for e in self.errors[:3])
