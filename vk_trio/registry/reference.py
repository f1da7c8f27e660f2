"""Image references (``ubuntu``, ``ghcr.io/o/r:1``, ``localhost:5000/x@sha256:...``) parsed
with Docker's defaulting rules, so the node asks the registry that ``docker pull`` would.

The grammar is distribution's ``reference`` package (what Docker and containerd use):

- the first ``/``-separated component is a registry host only if it contains ``.`` or ``:``,
  is ``localhost``, or has an upper-case letter; otherwise the image is on Docker Hub;
- Docker Hub's names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``) all mean
  the host that serves its API, ``registry-1.docker.io``, and a one-component repository there
  is an official image under ``library/``;
- the tag defaults to ``latest``, unless a digest pins the image (``name@sha256:<64 hex>``);
  with both (``name:tag@digest``) the digest decides what is fetched, as in Docker;
- repository components are lower-case ``[a-z0-9]`` runs joined by ``.``, ``_``, ``__`` or
  dashes; the whole name is at most 255 characters; a tag at most 128.
"""

from __future__ import annotations

import re

import msgspec

from vk_trio.registry.errors import InvalidReference

__all__ = ["DOCKER_HUB", "ImageReference", "parse_reference"]

DOCKER_HUB = "registry-1.docker.io"
"""The host that serves Docker Hub's registry API."""
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
MAX_NAME = 255


class ImageReference(msgspec.Struct, frozen=True):
    """One image: where its registry is, which repository, and which tag or digest."""

    registry: str
    """Host (and ``:port``) to talk to, lower-cased; Docker Hub is ``registry-1.docker.io``."""
    repository: str
    """``library/ubuntu``, ``org/team/app``: the ``<name>`` of ``/v2/<name>/...``."""
    tag: str | None = None
    """``latest`` by default; None when only a digest was given."""
    digest: str | None = None
    """``sha256:<hex>`` when the reference pins one."""

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text


def parse_reference(image: str) -> ImageReference:
    """``image`` as Docker reads it; raises :class:`InvalidReference` naming what is wrong."""
    text = image.strip()
    if not text:
        raise InvalidReference("image reference is empty", image=image)
    name, digest = _split_digest(text, image)
    name, tag = _split_tag(name, image)
    registry, repository = _split_registry(name, image)
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)


def _shown(image: str) -> str:
    """The reference quoted for a message, shortened so the reason after it still shows."""
    return repr(image if len(image) <= 80 else image[:77] + "...")


def _split_digest(text: str, image: str) -> tuple[str, str | None]:
    name, at, digest = text.partition("@")
    if not at:
        return text, None
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidReference(f"image {_shown(image)}: {digest!r} is not a digest", image=image)
    algorithm, hex_part = match["algorithm"], match["hex"]
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(
            f"image {_shown(image)}: digest algorithm {algorithm!r} is not supported", image=image
        )
    if len(hex_part) != expected or not re.fullmatch(r"[0-9a-f]+", hex_part):
        raise InvalidReference(
            f"image {_shown(image)}: a {algorithm} digest is {expected} lower-case hex digits",
            image=image,
        )
    return name, digest


def _split_tag(name: str, image: str) -> tuple[str, str | None]:
    """The tag is after the last ``:`` that comes after the last ``/`` (``host:5000/x`` has
    none)."""
    colon = name.rfind(":")
    if colon <= name.rfind("/"):
        return name, None
    tag = name[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise InvalidReference(
            f"image {_shown(image)}: tag {tag!r} must be 1-128 of letters, digits, '_', '.', '-'"
            " and not start with '.' or '-'",
            image=image,
        )
    return name[:colon], tag


def _split_registry(name: str, image: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    is_host = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if is_host:
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(
                f"image {_shown(image)}: {first!r} is not a registry host", image=image
            )
        registry, repository = first.lower(), rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    _check_repository(repository, image)
    return registry, repository


def _check_repository(repository: str, image: str) -> None:
    if len(repository) > MAX_NAME:
        raise InvalidReference(
            f"image {_shown(image)}: repository name is longer than {MAX_NAME} characters",
            image=image,
        )
    for component in repository.split("/"):
        if _COMPONENT.fullmatch(component):
            continue
        hint = " (must be lower-case)" if component.lower() != component else ""
        raise InvalidReference(
            f"image {_shown(image)}: {component!r} is not a valid repository name component{hint}",
            image=image,
        )
