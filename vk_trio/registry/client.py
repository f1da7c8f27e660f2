"""Read an image's config (ENTRYPOINT, CMD, ENV, WORKDIR, USER) through the OCI distribution
API, the way a container runtime resolves it before a pull, without pulling any layer.

The lookup, for ``name:tag`` or ``name@digest``:

1. ``GET /v2/<name>/manifests/<tag|digest>`` accepting an OCI index, a Docker manifest list,
   an OCI manifest or a Docker v2 manifest (authenticating on a 401: ``session``);
2. an index or manifest list: pick the ``linux/amd64`` entry (what Vast runs) and fetch that
   manifest by its digest; no such entry is an error that lists the platforms there are;
3. ``GET /v2/<name>/blobs/<config digest>`` (following redirects to blob storage), check the
   bytes against the digest, and read ``config``'s Entrypoint, Cmd, Env, WorkingDir, User.

Every manifest fetched by digest, and the config blob, is checked against its digest: a
registry (or anything between) cannot substitute what a pod will run.

**Caching.** A :class:`RegistryClient` remembers configs so that 1,000 pods of one image make
one set of requests: by ``(registry, repository, tag)`` for ``TAG_TTL`` seconds (a tag can be
moved), and by manifest digest with no expiry (content-addressed); both bounded, least
recently used first out. Concurrent lookups of one key wait for the first one instead of
asking too. After a tag's entry expires, it is revalidated with a ``HEAD`` of the manifest
(Docker Hub does not count HEADs against its pull rate limit): if the digest is unchanged,
nothing else is fetched. Entries are also keyed by who asked (a fingerprint of the
credentials used, or anonymous), so a config read with one pod's pull secret is never handed
to a pod without it. Failures are not cached: the caller's retry asks again.

**Layers.** :meth:`RegistryClient.image_layers` resolves a reference the same way (steps 1-2,
anonymously) and tells where the ``linux/amd64`` layers are and where an anonymous pull token
is had, for a downloader elsewhere: an instance fetching the vk-trio agent from the node's own
image. A private image is an ``IMAGE_UNAUTHORIZED`` there: nobody without credentials could
download it.

Timeouts: 10 s to connect, 30 s per read, and the whole lookup (token, manifests, blob) within
``TOTAL_TIMEOUT``, after which it is a ``RegistryUnavailable``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import NamedTuple, Self

import httpx
import msgspec
import trio

from vk_trio import __version__
from vk_trio.logs import redact
from vk_trio.registry.auth import base_url, find_credentials
from vk_trio.registry.errors import (
    IMAGE_INVALID,
    IMAGE_PLATFORM_UNSUPPORTED,
    REGISTRY_UNAVAILABLE,
    ImageConfigUnavailable,
)
from vk_trio.registry.models import (
    ACCEPT,
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    ImageConfigFile,
    ImageLayers,
    Manifest,
)
from vk_trio.registry.reference import ImageReference, parse_reference
from vk_trio.registry.session import Answer, Session

__all__ = ["RegistryClient", "image_config"]

Credentials = Mapping[str, tuple[str, str]]
"""Registry → (user, password), as read from a pod's image pull secrets."""

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
TOTAL_TIMEOUT = 30.0
"""Seconds for a whole lookup; a pod waiting on it would rather retry than hang."""
TAG_TTL = 300.0
"""Seconds a tag's config is trusted before the tag is looked at again."""
MAX_ENTRIES = 512
"""Configs remembered per cache (a few KiB each)."""
MAX_MANIFEST = 4 * 1024 * 1024
"""The size limit registries themselves put on manifests."""
MAX_CONFIG = 8 * 1024 * 1024
"""Image configs carry the build history; big ones are a few hundred KiB."""
PLATFORM = ("linux", "amd64")
"""Vast's hosts: the only platform whose config vk-trio can run."""

_HASHES: dict[str, Callable[[bytes], str]] = {
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    "sha512": lambda data: hashlib.sha512(data).hexdigest(),
}
_MANIFEST = msgspec.json.Decoder(Manifest)
_CONFIG = msgspec.json.Decoder(ImageConfigFile)


class _Key(NamedTuple):
    registry: str
    repository: str
    reference: str
    who: str


class _TagEntry(NamedTuple):
    expires: float
    config: ImageConfig


class RegistryClient:
    """Image configs from registries, over one ``httpx.AsyncClient``, cached (module doc).

    Use as ``async with RegistryClient() as registry: await registry.image_config(...)``.
    ``http`` lets tests inject a client (e.g. with a ``MockTransport``); only a client created
    here is closed here. An injected one should keep ``verify`` on and must not follow
    redirects itself (each hop is checked here). ``clock`` is trio's by default.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient | None = None,
        tag_ttl: float = TAG_TTL,
        max_entries: int = MAX_ENTRIES,
        total_timeout: float = TOTAL_TIMEOUT,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            follow_redirects=False,
            headers={"User-Agent": f"vk-trio/{__version__}"},
        )
        self._tag_ttl = tag_ttl
        self._max_entries = max_entries
        self._total_timeout = total_timeout
        self._clock = clock
        self._by_tag: OrderedDict[_Key, _TagEntry] = OrderedDict()
        self._by_digest: OrderedDict[_Key, ImageConfig] = OrderedDict()
        self._locks: dict[_Key, trio.Lock] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def image_layers(self, image: str | ImageReference) -> ImageLayers:
        """Where the ``linux/amd64`` layers of ``image`` are downloaded, anonymously (not
        cached: asked once, at start, for the node's own image). Raises
        ``InvalidReference`` or ``ImageConfigUnavailable`` (``IMAGE_UNAUTHORIZED`` when the
        image is private: nobody without credentials could download it)."""
        text = image if isinstance(image, str) else str(image)
        ref = parse_reference(image) if isinstance(image, str) else image
        session = Session(self._http, ref, image=text, credentials=None)
        with trio.move_on_after(self._total_timeout):
            answer = await session.get(
                "manifests", ref.reference, limit=MAX_MANIFEST, accept=ACCEPT
            )
            if ref.digest:
                _verify(session, answer.body, ref.digest, "manifest")
            digest = ref.digest or _content_digest(answer)
            manifest = await _platform_manifest(session, answer)
            blob_url = f"{base_url(ref.registry)}/v2/{ref.repository}/blobs/{{digest}}"
            return ImageLayers(
                layers=list(manifest.layers or []),
                blob_url=blob_url,
                token_url=session.token_url,
                digest=digest,
            )
        raise ImageConfigUnavailable(
            f"image {text}: no answer from {ref.registry} within {self._total_timeout:g} s",
            image=text,
            reason=REGISTRY_UNAVAILABLE,
        )

    async def image_config(
        self, image: str | ImageReference, *, credentials: Credentials | None = None
    ) -> ImageConfig:
        """The config of ``image`` for ``linux/amd64``; ``credentials`` are the pod's pull
        secrets (``{registry: (user, password)}``), used only for the image's own registry.

        Raises ``InvalidReference`` (permanent) or ``ImageConfigUnavailable`` (temporary,
        with a ``reason``).
        """
        text = image if isinstance(image, str) else str(image)
        ref = parse_reference(image) if isinstance(image, str) else image
        pair = find_credentials(credentials, ref.registry)
        if pair is not None:
            redact(pair[1])
        key = _Key(ref.registry, ref.repository, ref.reference, _fingerprint(pair))
        found = self._cached(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                found = self._cached(key)
                if found is not None:
                    return found
                session = Session(self._http, ref, image=text, credentials=pair)
                with trio.move_on_after(self._total_timeout):
                    return await self._lookup(session, ref, key)
                raise ImageConfigUnavailable(
                    f"image {text}: no answer from {ref.registry} within {self._total_timeout:g} s",
                    image=text,
                    reason=REGISTRY_UNAVAILABLE,
                )
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    def _cached(self, key: _Key) -> ImageConfig | None:
        if ":" in key.reference:  # a digest (tags have no ':'): content never changes
            return self._touch_digest(key)
        entry = self._by_tag.get(key)
        if entry is None or entry.expires <= self._clock():
            return None
        self._by_tag.move_to_end(key)
        return entry.config

    def _touch_digest(self, key: _Key) -> ImageConfig | None:
        config = self._by_digest.get(key)
        if config is not None:
            self._by_digest.move_to_end(key)
        return config

    async def _lookup(self, session: Session, ref: ImageReference, key: _Key) -> ImageConfig:
        """Revalidate an expired tag with a HEAD, else run the whole lookup; cache it."""
        stale = None if ref.digest else self._by_tag.get(key)
        if stale is not None:
            head = await session.get("manifests", ref.reference, limit=0, accept=ACCEPT, head=True)
            if head.headers.get("docker-content-digest") == stale.config.digest:
                self._remember(key, stale.config)
                return stale.config
        config = await _fetch(
            session, ref, lambda digest: self._touch_digest(key._replace(reference=digest))
        )
        self._remember(key, config)
        return config

    def _remember(self, key: _Key, config: ImageConfig) -> None:
        by_digest = key._replace(reference=config.digest)
        self._by_digest[by_digest] = config
        self._by_digest.move_to_end(by_digest)
        if ":" not in key.reference:
            self._by_tag[key] = _TagEntry(self._clock() + self._tag_ttl, config)
            self._by_tag.move_to_end(key)
        for cache in (self._by_tag, self._by_digest):
            while len(cache) > self._max_entries:
                cache.popitem(last=False)


async def image_config(
    image: str | ImageReference,
    *,
    credentials: Credentials | None = None,
    client: RegistryClient | None = None,
) -> ImageConfig:
    """:meth:`RegistryClient.image_config` on ``client``, or on a one-off client (no cache
    beyond this call) when none is given."""
    if client is not None:
        return await client.image_config(image, credentials=credentials)
    async with RegistryClient() as own:
        return await own.image_config(image, credentials=credentials)


async def _fetch(
    session: Session, ref: ImageReference, known: Callable[[str], ImageConfig | None]
) -> ImageConfig:
    """Steps 1-3 of the module doc; ``known`` answers from the digest cache after step 1."""
    answer = await session.get("manifests", ref.reference, limit=MAX_MANIFEST, accept=ACCEPT)
    digest = ref.digest or _content_digest(answer)
    if ref.digest:
        _verify(session, answer.body, ref.digest, "manifest")
    cached = known(digest)
    if cached is not None:
        return cached
    manifest = await _platform_manifest(session, answer)
    if manifest.config is None:
        raise _invalid(session, "the manifest has no config")
    blob = await session.get("blobs", manifest.config.digest, limit=MAX_CONFIG)
    _verify(session, blob.body, manifest.config.digest, "config blob")
    try:
        document = _CONFIG.decode(blob.body)
    except msgspec.DecodeError as exc:
        raise _invalid(session, f"the config is not an image config ({exc})") from exc
    container = document.config
    if container is None:
        return ImageConfig(entrypoint=[], cmd=[], env=[], working_dir="", user="", digest=digest)
    return ImageConfig(
        entrypoint=container.Entrypoint or [],
        cmd=container.Cmd or [],
        env=container.Env or [],
        working_dir=container.WorkingDir or "",
        user=container.User or "",
        digest=digest,
    )


async def _platform_manifest(session: Session, answer: Answer) -> Manifest:
    """The ``linux/amd64`` image manifest: ``answer``'s, or the one its index points at."""
    manifest = _decode_manifest(session, answer)
    if _is_index(manifest, answer):
        chosen = _pick_platform(session, manifest)
        answer = await session.get("manifests", chosen.digest, limit=MAX_MANIFEST, accept=ACCEPT)
        _verify(session, answer.body, chosen.digest, "manifest")
        manifest = _decode_manifest(session, answer)
    return manifest


def _content_digest(answer: Answer) -> str:
    """The digest of the manifest a tag resolved to: computed from the bytes received (the
    ``Docker-Content-Digest`` header is optional and unverifiable)."""
    return "sha256:" + hashlib.sha256(answer.body).hexdigest()


def _verify(session: Session, data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    hasher = _HASHES.get(algorithm)
    if hasher is None:
        raise _invalid(session, f"{what} {digest}: unsupported digest algorithm")
    if hasher(data) != expected:
        raise _invalid(session, f"{what} does not match its digest {digest}")


def _decode_manifest(session: Session, answer: Answer) -> Manifest:
    try:
        return _MANIFEST.decode(answer.body)
    except msgspec.DecodeError as exc:
        raise _invalid(session, f"the manifest is not a manifest ({exc})") from exc


def _is_index(manifest: Manifest, answer: Answer) -> bool:
    media_type = manifest.media_type or answer.headers.get("content-type", "").split(";")[0]
    return media_type in INDEX_TYPES or (manifest.manifests is not None and not manifest.config)


def _pick_platform(session: Session, index: Manifest) -> Descriptor:
    entries = index.manifests or []
    for entry in entries:
        platform = entry.platform
        if platform is not None and (platform.os, platform.architecture) == PLATFORM:
            return entry
    have = sorted({str(e.platform) for e in entries if e.platform and e.platform.os != "unknown"})
    raise ImageConfigUnavailable(
        f"image {session.image}: no {'/'.join(PLATFORM)} image in its index"
        f" (it has {', '.join(have) or 'none'})",
        image=session.image,
        reason=IMAGE_PLATFORM_UNSUPPORTED,
    )


def _invalid(session: Session, detail: str) -> ImageConfigUnavailable:
    return ImageConfigUnavailable(
        f"image {session.image}: {detail}", image=session.image, reason=IMAGE_INVALID
    )


def _fingerprint(pair: tuple[str, str] | None) -> str:
    """Who a cache entry was read as: ``""`` for anonymous, else a hash of the credentials
    (never the credentials themselves, which would then sit in memory twice)."""
    if pair is None:
        return ""
    return hashlib.sha256(f"{pair[0]}\0{pair[1]}".encode()).hexdigest()[:32]
