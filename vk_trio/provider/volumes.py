"""From a pod's ``volumes`` and ``volumeMounts`` to what the agent makes on the instance.

A Vast instance is a rented machine outside the cluster, so only the volumes whose contents the
node can send are given: ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` (their
files, resolved here as the kubelet's volume plugins resolve them: ``pkg/volume/configmap``,
``secret``, ``downwardapi``, ``projected``, the paths checked as ``util/atomic_writer.go``
checks them), and ``emptyDir`` (made by the agent). Everything else is refused with one line
saying why (:func:`unsupported_volume`), before any money is spent.

Errors carry the kubelet's own wording (``MountVolume.SetUp failed for volume "x" : configmap
"y" not found``), so that what people search for finds the same answers. As in ``spec.py``, a
missing ConfigMap, Secret or key raises :class:`MissingReference` (retried: it is usually
created by the same ``kubectl apply``); anything else wrong raises :class:`SpecError`.

Secret values end up in the bundle, so :func:`pod_volumes` returns the text of every Secret
value it used, for :func:`vk_trio.logs.redact`.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction

from vk_trio.agent.protocol import Mount, Volume, VolumeFile
from vk_trio.kube import models
from vk_trio.kube.models import (
    ConfigMap,
    ConfigMapVolumeSource,
    Container,
    DownwardAPIVolumeFile,
    KeyToPath,
    Pod,
    Quantity,
    ResourceFieldSelector,
    Secret,
)
from vk_trio.kube.quantity import parse_quantity, value
from vk_trio.provider.spec import (
    _SUBSCRIPT,
    MissingReference,
    ObjectLookup,
    SpecError,
    _field,
    resource_value,
    sub_path_expr,
)

__all__ = ["container_mounts", "pod_volumes", "unsupported_volume"]

DEFAULT_MODE = 0o644
"""The kubelet's default file mode for configMap, secret, downwardAPI and projected volumes."""

SERVICE_ACCOUNT_VOLUME = "kube-api-access-"
"""The prefix of the projected volume the ServiceAccount admission plugin adds to every pod
(token, ``ca.crt``, ``namespace``). Its token is left out rather than the pod refused: refusing
it would refuse nearly every pod, and the instance cannot reach the cluster's API anyway."""

_MAX_PATH = 4096
_MAX_NAME = 255

_CLUSTER_STORAGE = (
    "a Vast instance cannot mount cluster storage; use an emptyDir,"
    " or fetch the data in an init container"
)
_REFUSALS: Mapping[str, str] = {
    "hostPath": "the instance's host is not a node of the cluster; use an emptyDir",
    "image": "image volumes are not supported yet; copy the files in an init container",
    "gitRepo": "gitRepo is deprecated and not supported; clone the repository in an init"
    " container into an emptyDir",
}
_PROJECTION_REFUSALS: Mapping[str, str] = {
    "serviceAccountToken": "a token for the cluster's API reaching a rented machine needs an"
    " explicit opt-in",
    "clusterTrustBundle": "vk-trio does not read ClusterTrustBundles",
    "podCertificate": "a certificate for the cluster reaching a rented machine needs an"
    " explicit opt-in",
}
_VOLUME_FIELD_PATHS = frozenset(
    ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
     "metadata.annotations")
)  # fmt: skip
"""What a downwardAPI volume may project (the API server's list; ``spec.nodeName`` and the
like are env-only)."""
_NODE_DEFAULTED = frozenset(("cpu", "memory", "ephemeral-storage"))
"""Limits the kubelet fills from the node's allocatable when unset
(``MergeContainerResourceLimits``)."""


# --------------------------------------------------------------------------------------------
# What cannot be given


def unsupported_volume(pod: Pod) -> str | None:
    """One line naming the first volume or mount that a Vast instance cannot be given, and
    why; None when every one can."""
    for volume in pod.spec.volumes:
        refusal = _refusal(volume)
        if refusal is not None:
            return refusal
    declared = {volume.name for volume in pod.spec.volumes}
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        for mount in container.volume_mounts:
            if mount.name not in declared:
                return (
                    f'cannot find volume "{mount.name}" to mount into container "{container.name}"'
                )
    return None


def _refusal(volume: models.Volume) -> str | None:
    kind = volume.source_type
    if kind in ("configMap", "secret", "downwardAPI"):
        return None
    if kind == "emptyDir":
        medium = volume.empty_dir.medium if volume.empty_dir is not None else ""
        if medium in ("", "Memory"):
            return None
        return (
            f'volume "{volume.name}" is an emptyDir on medium "{medium}": a Vast instance has'
            ' no such medium for a pod; use "" (disk) or "Memory"'
        )
    if kind == "projected":
        return _projection_refusal(volume)
    if not kind:
        return f'volume "{volume.name}" has a type vk-trio does not know'
    article = "an" if kind[0] in "aeio" else "a"
    reason = _REFUSALS.get(kind, _CLUSTER_STORAGE)
    return f'volume "{volume.name}" is {article} {kind}: {reason}'


def _projection_refusal(volume: models.Volume) -> str | None:
    assert volume.projected is not None
    for source in volume.projected.sources:
        for kind, reason in _PROJECTION_REFUSALS.items():
            if kind == "serviceAccountToken" and volume.name.startswith(SERVICE_ACCOUNT_VOLUME):
                continue
            if getattr(source, _attribute(kind)) is not None:
                return (
                    f'volume "{volume.name}" projects a {kind}, which is not supported yet:'
                    f" {reason}"
                )
    return None


def _attribute(kind: str) -> str:
    """``serviceAccountToken`` → ``service_account_token``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind)


# --------------------------------------------------------------------------------------------
# Mounts


def container_mounts(
    pod: Pod, container: Container, env: Mapping[str, str] | None = None
) -> list[Mount]:
    """The container's ``volumeMounts`` as the agent takes them, a ``subPathExpr``
    expanded from ``env`` (the container's, :func:`sub_path_expr`). Raises
    :class:`SpecError` for what :func:`unsupported_volume` refuses, should a caller not have
    asked it, and for a ``subPathExpr`` that expands to an absolute path or one with
    ``..`` (the kubelet's ``CreateContainerConfigError``)."""
    declared = {volume.name for volume in pod.spec.volumes}
    mounts: list[Mount] = []
    for mount in container.volume_mounts:
        if mount.name not in declared:
            raise SpecError(
                f'cannot find volume "{mount.name}" to mount into container "{container.name}"'
            )
        sub_path = mount.sub_path
        if mount.sub_path_expr:
            sub_path = sub_path_expr(mount, env or {})
        mounts.append(
            Mount(
                volume=mount.name,
                path=mount.mount_path,
                sub_path=sub_path,
                read_only=mount.read_only,
            )
        )
    return mounts


# --------------------------------------------------------------------------------------------
# Contents


async def pod_volumes(
    pod: Pod, lookup: ObjectLookup, *, allocatable: Mapping[str, Quantity] | None = None
) -> tuple[list[Volume], set[str]]:
    """Every volume of ``pod`` as the agent makes it, and the Secret values used (to redact).

    ``allocatable`` (``cpu``, ``memory``, ``ephemeral-storage`` quantities: the instance's)
    stands in for a limit the container does not set, in a downwardAPI ``resourceFieldRef``,
    as the kubelet uses its node's allocatable. Raises :class:`SpecError` (including for what
    :func:`unsupported_volume` refuses) or :class:`MissingReference`.
    """
    refusal = unsupported_volume(pod)
    if refusal is not None:
        raise SpecError(refusal)
    resolver = _Resolver(pod, lookup, allocatable or {})
    volumes = [await resolver.volume(volume) for volume in pod.spec.volumes]
    return volumes, resolver.secret_values


class _Payload:
    """One volume's files by cleaned path, checked as the kubelet's atomic writer checks them;
    a path given twice is refused rather than silently overwritten."""

    def __init__(self) -> None:
        self.files: dict[str, VolumeFile] = {}

    def add(self, path: str, data: bytes, mode: int) -> None:
        _check_path(path)
        if not 0 <= mode <= 0o777:
            raise SpecError(
                f"mode {mode:#o} of {path}: must be a number between 0 and 0777 (octal),"
                " both inclusive"
            )
        clean = posixpath.normpath(path)
        if clean in self.files:
            raise SpecError(f"conflicting duplicate paths: {clean}")
        self.files[clean] = VolumeFile(path=clean, data=data, mode=mode)

    def sorted_files(self) -> list[VolumeFile]:
        """The files by path; a path that is also another's directory is refused (the writer
        could make only one of them)."""
        paths = sorted(self.files)
        for path in paths:
            parent = posixpath.dirname(path)
            while parent:
                if parent in self.files:
                    raise SpecError(f"conflicting paths: {parent} is a file and a directory")
                parent = posixpath.dirname(parent)
        return [self.files[path] for path in paths]


def _check_path(path: str) -> None:
    """``atomic_writer.validatePath``, with its wording."""
    if not path:
        raise SpecError(f'invalid path: must not be empty: "{path}"')
    if path.startswith("/"):
        raise SpecError(f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH:
        raise SpecError(f"invalid path: must be less than or equal to {_MAX_PATH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise SpecError(f"invalid path: must not contain '..': {path}")
        if len(item) > _MAX_NAME:
            raise SpecError(
                f"invalid path: filenames must be less than or equal to {_MAX_NAME} characters"
            )
    if items[0].startswith("..") and len(items[0]) > 2:
        raise SpecError(f"invalid path: must not start with '..': {path}")


def _mode(item_mode: int | None, default_mode: int | None) -> int:
    if item_mode is not None:
        return item_mode
    return default_mode if default_mode is not None else DEFAULT_MODE


def _secret_texts(data: bytes) -> Iterator[str]:
    """What of a Secret value could show up in a log line: the value, and each line of a
    multi-line one (a PEM key is logged a line at a time, if at all). Binary values that are
    not UTF-8 cannot be in a text log whole, and are skipped."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    yield text
    if "\n" in text.strip():
        yield from (line.strip() for line in text.splitlines() if len(line.strip()) >= 8)


class _Resolver:
    """Resolves one pod's volumes, reading each ConfigMap and Secret once."""

    def __init__(self, pod: Pod, lookup: ObjectLookup, allocatable: Mapping[str, Quantity]):
        self.pod = pod
        self.lookup = lookup
        self.allocatable = allocatable
        self.secret_values: set[str] = set()
        self._secrets: dict[str, Secret | None] = {}
        self._config_maps: dict[str, ConfigMap | None] = {}

    async def volume(self, volume: models.Volume) -> Volume:
        """The agent's volume; errors are prefixed as the kubelet's FailedMount event says."""
        try:
            return await self._volume(volume)
        except SpecError as exc:
            raise SpecError(_failed(volume, exc)) from None
        except MissingReference as exc:
            raise MissingReference(_failed(volume, exc)) from None

    async def _volume(self, volume: models.Volume) -> Volume:
        if volume.empty_dir is not None:
            return self._empty_dir(volume.name, volume.empty_dir)
        payload = _Payload()
        if volume.config_map is not None:
            source = volume.config_map
            mode = source.default_mode
            await self._config_map_files(source, mode, payload)
        elif volume.secret is not None:
            secret = volume.secret
            mode = secret.default_mode
            await self._secret_files(
                secret.secret_name, secret.items, secret.optional, mode, payload
            )
        elif volume.downward_api is not None:
            mode = volume.downward_api.default_mode
            self._downward_files(volume.downward_api.items, mode, payload)
        elif volume.projected is not None:
            await self._projected_files(volume.projected, payload)
        return Volume(name=volume.name, files=payload.sorted_files())

    def _empty_dir(self, name: str, source: models.EmptyDirVolumeSource) -> Volume:
        size_limit = None
        if source.size_limit is not None:
            size_limit = value(_quantity(source.size_limit, "sizeLimit"))
        return Volume(name=name, medium=source.medium, size_limit=size_limit)

    async def _projected_files(self, source: models.ProjectedVolumeSource, out: _Payload) -> None:
        """The sources merged into one payload, all under the projection's ``defaultMode``;
        a ``serviceAccountToken`` (only in the admission plugin's volume, by now) is left out."""
        mode = source.default_mode
        for projection in source.sources:
            if projection.config_map is not None:
                await self._config_map_files(projection.config_map, mode, out)
            elif projection.secret is not None:
                secret = projection.secret
                await self._secret_files(secret.name, secret.items, secret.optional, mode, out)
            elif projection.downward_api is not None:
                self._downward_files(projection.downward_api.items, mode, out)

    async def _config_map_files(
        self, source: ConfigMapVolumeSource, default_mode: int | None, out: _Payload
    ) -> None:
        """``configmap.MakePayload``: every key of ``data`` and ``binaryData``, or ``items``."""
        config_map = await self._config_map(source.name)
        if config_map is None:
            if not source.optional:
                raise MissingReference(f'configmap "{source.name}" not found')
            return
        if not source.items:
            for key, text in config_map.data.items():
                out.add(key, text.encode(), _mode(None, default_mode))
            for key, data in config_map.binary_data.items():
                out.add(key, data, _mode(None, default_mode))
            return
        for item in source.items:
            if item.key in config_map.data:
                content = config_map.data[item.key].encode()
            elif item.key in config_map.binary_data:
                content = config_map.binary_data[item.key]
            elif source.optional:
                continue
            else:
                raise MissingReference(f"configmap references non-existent config key: {item.key}")
            out.add(item.path, content, _mode(item.mode, default_mode))

    async def _secret_files(
        self,
        name: str,
        items: Iterable[KeyToPath],
        optional: bool | None,
        default_mode: int | None,
        out: _Payload,
    ) -> None:
        """``secret.MakePayload``: every key, or ``items``; values base64-decoded."""
        secret = await self._secret(name)
        if secret is None:
            if not optional:
                raise MissingReference(f'secret "{name}" not found')
            return
        wanted = list(items) or [KeyToPath(key=key, path=key) for key in secret.data]
        for item in wanted:
            encoded = secret.data.get(item.key)
            if encoded is None:
                if optional:
                    continue
                raise MissingReference(f"references non-existent secret key: {item.key}")
            data = self._decode(name, item.key, encoded)
            out.add(item.path, data, _mode(item.mode, default_mode))

    def _decode(self, secret: str, key: str, encoded: str) -> bytes:
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise SpecError(f'key "{key}" of secret "{secret}" is not base64-encoded') from None
        self.secret_values.update(_secret_texts(data))
        return data

    def _downward_files(
        self, items: Iterable[DownwardAPIVolumeFile], default_mode: int | None, out: _Payload
    ) -> None:
        """``downwardapi.CollectData``: an item with neither ref is an empty file, as there."""
        for item in items:
            text = ""
            if item.field_ref is not None:
                text = self._field(item.field_ref.field_path)
            elif item.resource_field_ref is not None:
                text = self._resource(item.resource_field_ref)
            out.add(item.path, text.encode(), _mode(item.mode, default_mode))

    def _field(self, path: str) -> str:
        if path not in _VOLUME_FIELD_PATHS and _SUBSCRIPT.fullmatch(path) is None:
            supported = ", ".join(f'"{p}"' for p in sorted(_VOLUME_FIELD_PATHS))
            raise SpecError(
                f'fieldPath: Unsupported value: "{path}": supported values: {supported}'
                " and metadata.labels['key'] / metadata.annotations['key']"
            )
        return _field(self.pod, path)

    def _resource(self, ref: ResourceFieldSelector) -> str:
        return resource_value(self.pod, ref, self.allocatable)

    async def _secret(self, name: str) -> Secret | None:
        if name not in self._secrets:
            self._secrets[name] = await self.lookup.secret(self.pod.metadata.namespace, name)
        return self._secrets[name]

    async def _config_map(self, name: str) -> ConfigMap | None:
        if name not in self._config_maps:
            namespace = self.pod.metadata.namespace
            self._config_maps[name] = await self.lookup.config_map(namespace, name)
        return self._config_maps[name]


def _quantity(text: Quantity, what: str) -> Fraction:
    try:
        return parse_quantity(text)
    except ValueError as exc:
        raise SpecError(f'{what}: invalid quantity "{text}": {exc}') from None


def _failed(volume: models.Volume, exc: Exception) -> str:
    return f'MountVolume.SetUp failed for volume "{volume.name}" : {exc}'
