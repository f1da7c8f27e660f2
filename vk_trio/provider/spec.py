"""From a Pod spec to the Vast create request (``PUT /api/v0/asks/{id}/``, ``vast-api.md`` §4).

One instance runs one image, so one container of the pod is chosen (:func:`chosen_container`,
annotation ``vast.ai/container``, default the first) and the others are reported as not run
(:func:`skipped_containers`). Init containers are not run either.

The mapping (:func:`instance_request`):

- ``image`` → ``image``; ``runtype`` is always ``"args"`` so the image's own ENTRYPOINT runs
  (ssh/jupyter runtypes replace it with Vast's init).
- ``command`` → ``onstart`` (``command[0]``, the entrypoint override, as the CLI sends
  ``--entrypoint``) and ``args`` (``command[1:] + args``); without ``command``, ``args`` alone.
  ``$(VAR)`` in both is expanded like the kubelet does.
- ``envFrom`` then ``env`` → ``env`` (kubelet rules, ``kubelet-contract.md`` §5): Secret values
  base64-decoded, ``$(VAR)`` expanded with ``$$`` as an escape, ``fieldRef`` for the paths the
  Virtual Kubelet supports, invalid names skipped, ``resourceFieldRef`` dropped. Under the
  agent, ``fieldRef`` also gives ``status.podIP``/``podIPs``/``hostIP``/``hostIPs`` (the
  instance's public address, known once it runs: the bundle is built then) and
  ``resourceFieldRef`` its value (:func:`resource_value`); without the agent, a
  ``status.*`` path is refused, since the create request is sent before there is an
  address. Service-link variables (``MY_SVC_SERVICE_HOST``) are not added: the instance is
  outside the cluster network.
- ``ports`` → ``env`` keys ``"-p 8000:8000"`` (``"-p 53:53/udp"`` for UDP), value ``"1"``.
- ``imagePullSecrets`` → ``image_login`` ``"-u user -p password registry"`` for the registry the
  image comes from.

With the vk-trio agent (``agent_env``), the request carries none of that: ``onstart``/``args``
are the agent's bootstrap (``vk_trio.agent.bootstrap``), ``env`` the ``-p`` options (the
agent's port too) and the agent's own variables (where to download it, its checksum, its link
credentials). The pod's env, Secret values included, goes to the agent over the link
(``provider/runtime.py``), never through Vast's API, which keeps a create's env with the
instance.

Without the agent, Secret values end up in the request, so the set of values used is
returned with it: the caller registers them with :func:`vk_trio.logs.redact` before
anything is logged or put in an Event.

A referenced Secret or ConfigMap that does not exist (and is not optional) raises
:class:`MissingReference`, a temporary error: it may be created later, and the kubelet retries
too. Everything else wrong with the spec raises :class:`SpecError`.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Protocol

import msgspec

from vk_trio.agent.bootstrap import SCRIPT as BOOTSTRAP
from vk_trio.agent.protocol import AGENT_PORT
from vk_trio.annotations import CONTAINER
from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.kube.models import (
    ConfigMap,
    Container,
    EnvFromSource,
    EnvVar,
    Pod,
    Quantity,
    ResourceFieldSelector,
    Secret,
    VolumeMount,
)
from vk_trio.kube.quantity import milli_value, parse_quantity, value
from vk_trio.vast.models import CreateInstance

__all__ = [
    "STATUS_FIELD_PATHS",
    "MissingReference",
    "ObjectLookup",
    "SpecError",
    "chosen_container",
    "container_env",
    "env_lookup",
    "expand",
    "go_quote",
    "image_registry",
    "instance_request",
    "pull_credentials",
    "resource_value",
    "skipped_containers",
    "sub_path_expr",
]


class SpecError(PermanentError):
    """The pod spec cannot run on a Vast instance as written; the pod must be changed."""


class MissingReference(TemporaryError):
    """A Secret/ConfigMap (or one of its keys) the pod needs does not exist yet; it is
    usually created by the same ``kubectl apply`` as the pod, so the buy is retried."""


class ObjectLookup(Protocol):
    """Reads the objects a pod references, in the pod's namespace; None when absent."""

    async def secret(self, namespace: str, name: str) -> Secret | None: ...

    async def config_map(self, namespace: str, name: str) -> ConfigMap | None: ...


# --------------------------------------------------------------------------------------------
# Which container


def chosen_container(pod: Pod) -> Container:
    """The container the instance runs: the one ``vast.ai/container`` names, else the first."""
    containers = pod.spec.containers
    if not containers:
        raise SpecError(f"pod {pod.key} has no containers")
    wanted = pod.metadata.annotations.get(CONTAINER)
    if wanted is None:
        return containers[0]
    for container in containers:
        if container.name == wanted:
            return container
    names = ", ".join(f'"{c.name}"' for c in containers)
    raise SpecError(
        f'{CONTAINER}: "{wanted}" is not a container of pod {pod.key}; expected one of {names}'
    )


def skipped_containers(pod: Pod) -> list[str]:
    """Names of the containers that will not run: one instance runs one image."""
    chosen = chosen_container(pod).name
    return [c.name for c in pod.spec.containers if c.name != chosen]


# --------------------------------------------------------------------------------------------
# The request


async def instance_request(
    pod: Pod,
    *,
    label: str,
    disk_gb: float,
    lookup: ObjectLookup,
    bid_price: float | None = None,
    agent_env: Mapping[str, str] | None = None,
) -> tuple[CreateInstance, set[str]]:
    """The create body for ``pod`` and the Secret-sourced values it uses (to redact).

    ``bid_price`` makes the instance interruptible (see ``selection.bid_price``);
    ``agent_env`` runs the vk-trio agent, with these variables, instead of the pod's process.
    Raises :class:`SpecError` or :class:`MissingReference`.
    """
    container = chosen_container(pod)
    if not container.image.strip():
        raise SpecError(f'container "{container.name}" of pod {pod.key} has no image')
    # Under the agent, the env is only checked here (a missing reference waits before any
    # buy): what depends on the instance (its address) is resolved when the bundle is made.
    resolver = _EnvResolver(pod, lookup, address="" if agent_env is not None else None)
    env = await resolver.resolve(container)  # a missing reference waits before any buy
    image_login = await _image_login(pod, container.image, lookup, resolver.secret_values)
    if agent_env is not None:
        request = _agent_request(pod, container, label, disk_gb, agent_env)
        return msgspec.structs.replace(request, image_login=image_login, price=bid_price), (
            resolver.secret_values
        )
    lookup_var = env_lookup(env)
    command = [expand(part, lookup_var) for part in container.command]
    args = [expand(part, lookup_var) for part in container.args]
    request_env = dict(env)
    request_env.update(_port_flags(pod, container))
    return (
        CreateInstance(
            image=container.image.strip(),
            disk=disk_gb,
            label=label,
            env=request_env,
            runtype="args",
            onstart=command[0] if command else None,
            args=command[1:] + args,
            image_login=image_login,
            price=bid_price,
        ),
        resolver.secret_values,
    )


def _agent_request(
    pod: Pod,
    container: Container,
    label: str,
    disk_gb: float,
    agent_env: Mapping[str, str],
) -> CreateInstance:
    """The create body that runs the agent's bootstrap: no pod env, no pod command."""
    flags = _port_flags(pod, container)
    agent_port = f"-p {AGENT_PORT}:{AGENT_PORT}"
    if agent_port in flags:
        raise SpecError(
            f"port {AGENT_PORT} of pod {pod.key} is the vk-trio agent's inside the instance;"
            " use another port"
        )
    return CreateInstance(
        image=container.image.strip(),
        disk=disk_gb,
        label=label,
        env={**flags, agent_port: "1", **agent_env},
        runtype="args",
        onstart="sh",
        args=["-c", BOOTSTRAP],
    )


async def container_env(
    pod: Pod,
    container: Container,
    lookup: ObjectLookup,
    *,
    address: str | None = None,
    allocatable: Mapping[str, Quantity] | None = None,
) -> tuple[dict[str, str], set[str]]:
    """``container``'s environment as the kubelet builds it, and the Secret values in it.

    ``address`` is the instance's (the pod's IP and its host's, under the agent; None
    refuses ``status.*`` paths), ``allocatable`` what stands in for an unset limit."""
    resolver = _EnvResolver(pod, lookup, address=address, allocatable=allocatable)
    env = await resolver.resolve(container)
    return env, resolver.secret_values


def _port_flags(pod: Pod, container: Container) -> dict[str, str]:
    """Docker ``-p`` options, which Vast takes as env keys: the container's ports and its
    probes' ports. Host ports are Vast's choice (``Instance.endpoints()`` reports them), so
    ``hostPort`` is ignored."""
    flags: dict[str, str] = {}
    for port in container.ports:
        protocol = port.protocol.upper()
        if protocol not in ("TCP", "UDP"):
            raise SpecError(
                f"container port {port.container_port}/{port.protocol} of pod {pod.key}:"
                " Vast instances expose TCP and UDP only"
            )
        if not 0 < port.container_port < 65536:
            raise SpecError(f"container port {port.container_port} of pod {pod.key} is invalid")
        suffix = "/udp" if protocol == "UDP" else ""
        flags[f"-p {port.container_port}:{port.container_port}{suffix}"] = "1"
    # vk-trio probes from outside, so a probe's port must be published even when the pod
    # does not list it (a kubelet reaches every port of the pod's network namespace).
    for probe in (container.startup_probe, container.readiness_probe, container.liveness_probe):
        action = (probe.http_get or probe.tcp_socket or probe.grpc) if probe else None
        if action is not None and isinstance(action.port, int) and 0 < action.port < 65536:
            flags.setdefault(f"-p {action.port}:{action.port}", "1")
    return flags


# --------------------------------------------------------------------------------------------
# Environment


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
"""Kubernetes' ``IsEnvVarName``."""


def _valid_env_name(name: str) -> bool:
    """A Kubernetes env name that Vast will not mistake for a docker option (``-p``, ``-h``:
    ``env`` keys starting with ``-`` are options there)."""
    return _ENV_NAME.fullmatch(name) is not None and not name.startswith("-")


def env_lookup(env: Mapping[str, str]) -> Callable[[str], str]:
    """The kubelet's lookup for ``$(NAME)``: an undefined name stays as written."""
    return lambda name: env.get(name, f"$({name})")


def expand(text: str, lookup: Callable[[str], str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``third_party/forked/golang/expansion``): ``$$`` is a
    literal ``$``, ``$(NAME)`` is replaced by ``lookup(NAME)``, and anything else, including an
    unterminated ``$(``, is kept as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    out.append(lookup(text[cursor + 2 : closer]))
                    advance = closer - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_FIELD_PATHS: Mapping[str, Callable[[Pod], str]] = {
    "metadata.name": lambda pod: pod.metadata.name,
    "metadata.namespace": lambda pod: pod.metadata.namespace,
    "metadata.uid": lambda pod: pod.metadata.uid,
    "metadata.labels": lambda pod: _format_map(pod.metadata.labels),
    "metadata.annotations": lambda pod: _format_map(pod.metadata.annotations),
    "spec.nodeName": lambda pod: pod.spec.node_name,
    "spec.serviceAccountName": lambda pod: pod.spec.service_account_name,
}
_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
STATUS_FIELD_PATHS = frozenset(("status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs"))
"""The ``fieldRef`` paths that only the agent can give: the instance's address, which exists
once it runs (one address: the pod's IP is its host's on a Vast instance)."""


def _format_map(values: Mapping[str, str]) -> str:
    """``metadata.labels`` as the downward API renders it (``fieldpath.FormatMap``): sorted
    ``key="value"`` lines, the value quoted by Go's ``%q``."""
    return "\n".join(f"{key}={go_quote(value)}" for key, value in sorted(values.items()))


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable characters (letters, marks, numbers, punctuation,
    symbols, the ASCII space) as they are, the rest escaped in lowercase hex. Not
    ``json.dumps``, which escapes all of non-ASCII and leaves DEL alone: a label value
    ``café`` must read the same as on a kubelet's node."""
    out = ['"']
    for char in text:
        escape = _GO_ESCAPES.get(char)
        if escape is not None:
            out.append(escape)
        elif char == " " or unicodedata.category(char)[0] in "LMNPS":
            out.append(char)
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _field(pod: Pod, path: str) -> str:
    subscript = _SUBSCRIPT.fullmatch(path)
    if subscript is not None:
        source = pod.metadata.labels if subscript[1] == "labels" else pod.metadata.annotations
        return source.get(subscript[2], "")
    getter = _FIELD_PATHS.get(path)
    if getter is None:
        raise SpecError(
            f'unsupported fieldPath "{path}" in pod {pod.key}; supported:'
            f" {', '.join(_FIELD_PATHS)} and"
            " metadata.labels['key'] / metadata.annotations['key']"
        )
    return getter(pod)


def _decode(pod: Pod, secret: str, key: str, value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        raise SpecError(
            f'key "{key}" of secret "{secret}" used by pod {pod.key} is not base64-encoded'
            " UTF-8 text, so it cannot be an environment variable"
        ) from None


class _EnvResolver:
    """Resolves one container's environment, remembering every Secret value it used."""

    def __init__(
        self,
        pod: Pod,
        lookup: ObjectLookup,
        *,
        address: str | None = None,
        allocatable: Mapping[str, Quantity] | None = None,
    ) -> None:
        self.pod = pod
        self.lookup = lookup
        self.address = address
        """None: the pod is not under the agent, and has no address to give."""
        self.allocatable = allocatable or {}
        self._container: Container | None = None
        self.secret_values: set[str] = set()
        self._secrets: dict[str, Secret | None] = {}
        self._config_maps: dict[str, ConfigMap | None] = {}

    async def secret(self, name: str) -> Secret | None:
        if name not in self._secrets:
            self._secrets[name] = await self.lookup.secret(self.pod.metadata.namespace, name)
        return self._secrets[name]

    async def config_map(self, name: str) -> ConfigMap | None:
        if name not in self._config_maps:
            namespace = self.pod.metadata.namespace
            self._config_maps[name] = await self.lookup.config_map(namespace, name)
        return self._config_maps[name]

    def secret_value(self, secret: str, key: str, encoded: str) -> str:
        value = _decode(self.pod, secret, key, encoded)
        if value:
            self.secret_values.add(value)
        return value

    async def resolve(self, container: Container) -> dict[str, str]:
        self._container = container
        env: dict[str, str] = {}
        for source in container.env_from:
            for key, text in (await self._source_items(source)).items():
                if _valid_env_name(source.prefix + key):
                    env[source.prefix + key] = text
        for var in container.env:
            if not _valid_env_name(var.name):
                continue
            value = await self._value(var, env)
            if value is not None:
                env[var.name] = value
        return env

    async def _source_items(self, source: EnvFromSource) -> dict[str, str]:
        """The keys and values one ``envFrom`` entry brings (none when optional and missing)."""
        if source.config_map_ref is not None:
            ref = source.config_map_ref
            config_map = await self.config_map(ref.name)
            if config_map is None:
                self._missing("configmap", ref.name, ref.optional)
                return {}
            return dict(config_map.data)
        if source.secret_ref is not None:
            secret_ref = source.secret_ref
            secret = await self.secret(secret_ref.name)
            if secret is None:
                self._missing("secret", secret_ref.name, secret_ref.optional)
                return {}
            return {
                key: self.secret_value(secret_ref.name, key, value)
                for key, value in secret.data.items()
            }
        return {}

    async def _value(self, var: EnvVar, env: Mapping[str, str]) -> str | None:
        """The variable's value; None drops it (optional and missing, or resourceFieldRef)."""
        source = var.value_from
        if source is None:
            return expand(var.value or "", env_lookup(env))
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            secret = await self.secret(ref.name)
            if secret is None:
                self._missing("secret", ref.name, ref.optional)
                return None
            if ref.key not in secret.data:
                self._missing_key("secret", ref.name, ref.key, ref.optional)
                return None
            return self.secret_value(ref.name, ref.key, secret.data[ref.key])
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            config_map = await self.config_map(ref.name)
            if config_map is None:
                self._missing("configmap", ref.name, ref.optional)
                return None
            if ref.key not in config_map.data:
                self._missing_key("configmap", ref.name, ref.key, ref.optional)
                return None
            return config_map.data[ref.key]
        if source.field_ref is not None:
            return self._field(source.field_ref.field_path)
        if source.resource_field_ref is not None and self.address is not None:
            return self._resource(source.resource_field_ref)
        return None

    def _field(self, path: str) -> str:
        if path not in STATUS_FIELD_PATHS:
            return _field(self.pod, path)
        if self.address is None:
            raise SpecError(
                f'fieldPath "{path}" in pod {self.pod.key} needs the vk-trio agent inside the '
                "instance: the address exists only once the instance runs; set "
                'vast.ai/agent: "true" on a node with --agent-url'
            )
        return self.address

    def _resource(self, ref: Mapping[str, str]) -> str:
        selector = ResourceFieldSelector(
            container_name=ref.get("containerName", ""),
            resource=ref.get("resource", ""),
            divisor=ref.get("divisor", ""),
        )
        return resource_value(self.pod, selector, self.allocatable, default=self._container)

    def _missing(self, kind: str, name: str, optional: bool | None) -> None:
        """Raise for a required object; an optional one is skipped (the kubelet only warns)."""
        if not optional:
            raise MissingReference(f'{kind} "{name}" not found, required by pod {self.pod.key}')

    def _missing_key(self, kind: str, name: str, key: str, optional: bool | None) -> None:
        if not optional:
            raise MissingReference(
                f'{kind} "{name}" doesn\'t contain the "{key}" key required by pod {self.pod.key}'
            )


# --------------------------------------------------------------------------------------------
# Resources and subPathExpr


_NODE_DEFAULTED = frozenset(("cpu", "memory", "ephemeral-storage"))
"""Limits the kubelet fills from the node's allocatable when unset
(``MergeContainerResourceLimits``)."""


def _quantity(text: Quantity, what: str) -> Fraction:
    try:
        return parse_quantity(text)
    except ValueError as exc:
        raise SpecError(f'{what}: invalid quantity "{text}": {exc}') from None


def _resource_container(pod: Pod, name: str, default: Container | None) -> Container:
    if not name and default is not None:
        return default
    for container in (*pod.spec.containers, *pod.spec.init_containers):
        if container.name == name:
            return container
    raise SpecError(f"container {name} not found")


def resource_value(
    pod: Pod,
    ref: ResourceFieldSelector,
    allocatable: Mapping[str, Quantity],
    *,
    default: Container | None = None,
) -> str:
    """``ExtractContainerResourceValue``: the container's request or limit (an unset
    cpu/memory/ephemeral-storage limit is the allocatable's) over the divisor, rounded up;
    cpu in thousandths, as the kubelet divides it. ``default`` is the container an env
    variable's ``resourceFieldRef`` without ``containerName`` means."""
    container = _resource_container(pod, ref.container_name, default)
    kind, _, name = ref.resource.partition(".")
    if kind not in ("limits", "requests") or not (
        name in _NODE_DEFAULTED or name.startswith("hugepages-")
    ):
        raise SpecError(f"unsupported container resource : {ref.resource}")
    amounts = container.resources.limits if kind == "limits" else container.resources.requests
    text: Quantity | None = amounts.get(name)
    amount = _quantity(text, ref.resource) if text is not None else Fraction(0)
    if kind == "limits" and name in _NODE_DEFAULTED and amount == 0:
        fallback = allocatable.get(name)
        amount = _quantity(fallback, ref.resource) if fallback is not None else amount
    divisor = _quantity(ref.divisor, "divisor") if ref.divisor != "" else Fraction(0)
    divisor = divisor or Fraction(1)
    if name == "cpu":
        return str(-(-milli_value(amount) // milli_value(divisor)))
    return str(-(-value(amount) // value(divisor)))


def sub_path_expr(mount: VolumeMount, env: Mapping[str, str]) -> str:
    """A mount's ``subPathExpr`` expanded from the container's env, as the kubelet's
    ``makeMounts`` does (``ExpandContainerVolumeMounts``): only ``$(VAR)``, and a variable
    that is unset or empty is an error; the result must be relative and never step out
    (``..``). The error's text is the kubelet's, its ``CreateContainerConfigError``
    message."""
    missing: set[str] = set()

    def lookup(name: str) -> str:
        found = env.get(name, "")
        if not found:
            missing.add(name)
        return found

    expanded = expand(mount.sub_path_expr, lookup)
    if missing:
        raise SpecError(f"missing value for {', '.join(sorted(missing))}")
    if expanded.startswith("/"):
        raise SpecError(f"error SubPath `{expanded}` must not be an absolute path")
    if ".." in expanded.split("/"):
        raise SpecError(f"unable to provision SubPath `{expanded}`: must not contain '..'")
    return expanded


# --------------------------------------------------------------------------------------------
# Registry credentials


_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def image_registry(image: str) -> str:
    """The registry host of an image reference: ``ghcr.io/x/y:1`` → ``ghcr.io``, ``ubuntu`` →
    ``docker.io`` (a first component is a host only if it has a ``.`` or ``:`` or is localhost,
    as Docker decides)."""
    first, slash, _ = image.strip().partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return _normalise_registry(first)
    return _DOCKER_HUB


def _normalise_registry(server: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``https://ghcr.io`` → ``ghcr.io``."""
    host = re.sub(r"^[a-z]+://", "", server.strip().casefold()).split("/", 1)[0]
    return _DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


async def _image_login(
    pod: Pod, image: str, lookup: ObjectLookup, secret_values: set[str]
) -> str | None:
    """``image_login`` from the first pull secret with credentials for the image's registry.

    Like the kubelet, a pull secret that is missing or unreadable does not stop the pod (the
    pull may not need it); it is skipped.
    """
    registry = image_registry(image)
    for ref in pod.spec.image_pull_secrets:
        secret = await lookup.secret(pod.metadata.namespace, ref.name)
        if secret is None:
            continue
        credentials = _registry_credentials(secret).get(registry)
        if credentials is None:
            continue
        user, password = credentials
        if any(not part or re.search(r"\s", part) for part in credentials):
            raise SpecError(
                f'image pull secret "{ref.name}" of pod {pod.key} has an empty user or password,'
                " or one with whitespace, which Vast's image_login cannot carry"
            )
        secret_values.add(password)
        return f"-u {user} -p {password} {registry}"
    return None


async def pull_credentials(pod: Pod, lookup: ObjectLookup) -> dict[str, tuple[str, str]]:
    """Registry → (user, password) from the pod's pull secrets (the first one wins)."""
    found: dict[str, tuple[str, str]] = {}
    for ref in pod.spec.image_pull_secrets:
        secret = await lookup.secret(pod.metadata.namespace, ref.name)
        if secret is not None:
            for registry, pair in _registry_credentials(secret).items():
                found.setdefault(registry, pair)
    return found


def _registry_credentials(secret: Secret) -> dict[str, tuple[str, str]]:
    """Registry → (user, password) from a ``kubernetes.io/dockerconfigjson`` (``auths`` in
    ``.dockerconfigjson``) or legacy ``kubernetes.io/dockercfg`` Secret; {} if unreadable."""
    encoded = secret.data.get(".dockerconfigjson") or secret.data.get(".dockercfg")
    if encoded is None:
        return {}
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (ValueError, RecursionError):  # not base64 or ASCII, not JSON, absurdly nested
        return {}
    if not isinstance(document, dict):
        return {}
    auths = document.get("auths") if ".dockerconfigjson" in secret.data else document
    found: dict[str, tuple[str, str]] = {}
    if not isinstance(auths, dict):
        return found
    for server, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if not (isinstance(user, str) and isinstance(password, str)) and "auth" in entry:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, TypeError):  # not base64 or ASCII, not UTF-8, not a string
                continue
        if isinstance(user, str) and isinstance(password, str):
            found.setdefault(_normalise_registry(server), (user, password))
    return found
