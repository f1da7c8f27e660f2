"""The pod as the vk-trio agent runs it: who needs the agent, how it reaches the instance,
and the bundle it is handed over the link.

**Who needs it.** Only the agent inside the instance can give a pod its volumes, its init
containers and its exec probes; a node with an agent (``agent_source``) also sends
Secret-sourced env through it rather than through Vast's API. A pod that asks for any of those
runs under the agent, or is refused with the reason when the node has none: never run without
what it asked for (:func:`agent_placement`). ``vast.ai/agent: "true"`` asks for it anyway.

**How it arrives** (:class:`AgentDelivery`): the instance's entrypoint is the bootstrap
(``vk_trio.agent.bootstrap``), which downloads ``--agent-url`` (or, by default, the layer of
the node's own image that holds the binary: ``agent_source``), checks it against the SHA-256
the node passes, and runs it. The link's credentials for the pod are derived from a master
secret (itself derived from the Vast API key: nothing to store, the same on every replica)
and the pod's UID (``vk_trio.agent.link``).

**What it is handed** (:func:`pod_bundle`): each process's argv as the kubelet would run it
(the pod's ``command``/``args`` over the image's ENTRYPOINT/CMD, read from its registry when
the pod sets no ``command``), its env (Secret values included), working directory, mounts and
exec probes; the pod's volumes with their contents; the init containers in order. The image's
own ENV, WORKDIR and USER need no lookup: Docker gives them to the agent's process, and the
agent passes them on.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx
import trio

from vk_trio.agent.bootstrap import (
    AGENT_LAYER_ENV,
    AGENT_LAYER_SHA256_ENV,
    AGENT_SHA256_ENV,
    AGENT_TOKEN_URL_ENV,
    AGENT_URL_ENV,
)
from vk_trio.agent.link import CREDENTIALS_ENV, LinkKeys, agent_credentials, node_keys, pod_secret
from vk_trio.agent.protocol import Bundle, ExecProbe, Hook, HttpHook, Mount, ProcessSpec
from vk_trio.annotations import AGENT, INIT_IN_MAIN_IMAGE
from vk_trio.config import ConfigError, Settings
from vk_trio.kube.models import Container, LifecycleHandler, Pod, Probe, Quantity
from vk_trio.node.provider import InvalidPod
from vk_trio.provider.spec import (
    STATUS_FIELD_PATHS,
    ObjectLookup,
    SpecError,
    chosen_container,
    container_env,
    env_lookup,
    expand,
    pull_credentials,
)
from vk_trio.provider.volumes import (
    SERVICE_ACCOUNT_VOLUME,
    container_mounts,
    pod_volumes,
    unsupported_volume,
)
from vk_trio.registry import ImageConfig

__all__ = [
    "NO_AGENT",
    "AgentDelivery",
    "CreateContainerConfigError",
    "ImageConfigs",
    "InstanceFacts",
    "agent_delivery",
    "agent_placement",
    "link_master",
    "pod_bundle",
]


class ImageConfigs(Protocol):
    """What the registry says an image runs (``vk_trio.registry.RegistryClient``)."""

    async def image_config(
        self, image: str, *, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageConfig: ...


@dataclass(frozen=True)
class AgentDelivery:
    """Where instances download the agent, its digest, and the node's link master secret.

    ``layer``: ``url`` is a registry blob (a gzip'd tar holding ``vk-trio``, ``sha256`` the
    layer's digest) rather than the binary, and ``token_url`` where the bootstrap asks for an
    anonymous pull token (``""``: the registry wants none); see ``vk_trio.agent.bootstrap``.
    """

    url: str
    sha256: str
    master: bytes
    layer: bool = False
    token_url: str = ""

    def env(self, pod: Pod) -> dict[str, str]:
        """The bootstrap's variables in the pod's create request: no pod value among them."""
        credentials = {CREDENTIALS_ENV: agent_credentials(pod_secret(self.master, pod.uid))}
        if not self.layer:
            return {AGENT_URL_ENV: self.url, AGENT_SHA256_ENV: self.sha256, **credentials}
        source = {AGENT_LAYER_ENV: self.url, AGENT_LAYER_SHA256_ENV: self.sha256}
        if self.token_url:
            source[AGENT_TOKEN_URL_ENV] = self.token_url
        return {**source, **credentials}

    def keys_for(self, uid: str) -> LinkKeys:
        """The node's end of the link to the agent of the pod with this UID."""
        return node_keys(pod_secret(self.master, uid))


async def agent_delivery(settings: Settings) -> AgentDelivery | None:
    """The delivery ``settings`` describe; None without ``--agent-url``. Raises
    ``ConfigError`` when the digest is not given and cannot be found."""
    if settings.agent_url is None:
        return None
    digest = settings.agent_sha256 or await _own_digest() or await _served_digest(settings)
    return AgentDelivery(settings.agent_url, digest, link_master(settings))


def link_master(settings: Settings) -> bytes:
    """The master secret of the node's links to agents, derived from the Vast API key: the
    same on every replica, nothing to store."""
    return hmac.digest(settings.vast_api_key.encode(), b"vk-trio agent link master", "sha256")


async def _own_digest() -> str | None:
    """This binary's SHA-256 when it runs as the static binary: the agent is the same file."""
    if not getattr(sys, "frozen", False):
        return None
    return await trio.to_thread.run_sync(_file_digest, sys.executable)


def _file_digest(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


async def _served_digest(settings: Settings) -> str:
    """The digest of what ``--agent-url`` serves now (not run as the binary: a development
    checkout, the demo), pinned for this process's life."""
    url = settings.agent_url or ""
    try:
        async with httpx.AsyncClient(timeout=60.0) as http:
            response = await http.get(url, follow_redirects=True)
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"--agent-url {url} could not be read to pin its SHA-256 ({exc}); "
            "set --agent-sha256, or make the URL reachable from the node"
        ) from exc
    return hashlib.sha256(response.content).hexdigest()


# -- who needs the agent ------------------------------------------------------------------


NO_AGENT = "this node has no --agent-url (AGENT_URL)"
"""Why a node has no agent, when nothing better is known (``missing`` of ``agent_placement``)."""


def agent_placement(pod: Pod, delivery: AgentDelivery | None, *, missing: str = NO_AGENT) -> bool:
    """Whether the pod runs under the agent. Raises ``InvalidPod`` when it asks for what
    cannot be given: a volume type no instance can mount, an init container in another
    image, or what only the agent gives on a node without it (``missing`` says why it has
    none: the refusal's words)."""
    refused = unsupported_volume(pod)
    if refused is not None:
        raise InvalidPod("UnsupportedVolume", refused)
    container = chosen_container(pod)
    _check_init_images(pod, container)
    needs = _needs(pod, container, secret_env=delivery is not None)
    wanted = pod.metadata.annotations.get(AGENT, "").strip().lower()
    if wanted not in ("", "true", "false"):
        raise InvalidPod("InvalidAnnotation", f'{AGENT}: "{wanted}" is not "true" or "false"')
    if wanted == "false" and needs:
        raise InvalidPod(
            "AgentRequired",
            f"pod {pod.key} asks for {', '.join(needs)}, which only the vk-trio agent inside "
            f'the instance gives; remove {AGENT}: "false"',
        )
    if not needs and wanted != "true":
        return False
    if delivery is None:
        asked = ", ".join(needs) if needs else f'{AGENT}: "true"'
        raise InvalidPod(
            "AgentNotConfigured",
            f"pod {pod.key} asks for {asked}, which only the vk-trio agent inside the instance "
            f"gives, and {missing}; nothing was bought",
        )
    return True


def _needs(pod: Pod, container: Container, *, secret_env: bool) -> list[str]:
    """What the pod asks for that only the agent gives, in words for the refusal."""
    needs = []
    # The ServiceAccount admission plugin adds kube-api-access-* to nearly every pod: the
    # pod did not ask for it, and without the agent nothing can use it on the instance.
    asked = [v.name for v in pod.spec.volumes if not v.name.startswith(SERVICE_ACCOUNT_VOLUME)]
    if asked:
        needs.append("volumes (" + ", ".join(asked) + ")")
    if pod.spec.init_containers:
        needs.append("init containers")
    if container.working_dir:
        needs.append("a workingDir")
    if any(_exec_probes(container)):
        needs.append("exec probes")
    if container.lifecycle is not None and (
        container.lifecycle.post_start is not None or container.lifecycle.pre_stop is not None
    ):
        needs.append("lifecycle hooks")
    if _status_env(container):
        needs.append("the pod's IP in its env")
    if secret_env and _secret_env(container):
        needs.append("Secret env")
    return needs


def _status_env(container: Container) -> bool:
    """``status.podIP`` and the like: the instance's address, which the agent is given."""
    return any(
        var.value_from is not None
        and var.value_from.field_ref is not None
        and var.value_from.field_ref.field_path in STATUS_FIELD_PATHS
        for var in container.env
    )


def _secret_env(container: Container) -> bool:
    return any(
        var.value_from is not None and var.value_from.secret_key_ref is not None
        for var in container.env
    ) or any(source.secret_ref is not None for source in container.env_from)


def _check_init_images(pod: Pod, container: Container) -> None:
    """One instance runs one image: an init container of another image runs in the main
    one only when the pod says so."""
    if pod.metadata.annotations.get(INIT_IN_MAIN_IMAGE, "").strip().lower() == "true":
        return
    for init in pod.spec.init_containers:
        if init.image.strip() != container.image.strip():
            raise InvalidPod(
                "InitContainerImage",
                f'init container "{init.name}" of pod {pod.key} uses image {init.image}, not '
                f"{container.image}: one Vast instance runs one image; set "
                f'{INIT_IN_MAIN_IMAGE}: "true" to run its command in {container.image}',
            )


# -- the bundle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFacts:
    """What the bundle takes from the running instance: its public address (the pod's IP
    and its host's, for ``status.podIP`` and the like) and what stands in for the node's
    allocatable when a container sets no limit (``resourceFieldRef``): its CPU cores and
    disk. Memory is not reported by Vast for an instance, so an unset memory limit reads 0
    unless the node learns it."""

    address: str = ""
    allocatable: Mapping[str, Quantity] = field(default_factory=dict)


async def pod_bundle(
    pod: Pod, lookup: ObjectLookup, images: ImageConfigs, instance: InstanceFacts | None = None
) -> tuple[Bundle, set[str]]:
    """The pod as the agent runs it, and the Secret values in it (to redact). Raises
    ``SpecError``, ``MissingReference`` or ``ImageConfigUnavailable`` (temporary)."""
    facts = instance or InstanceFacts()
    container = chosen_container(pod)
    volumes, secrets = await pod_volumes(pod, lookup, allocatable=facts.allocatable)
    credentials = await pull_credentials(pod, lookup)
    main = await _process(pod, container, lookup, images, credentials, secrets, facts)
    inits = [
        await _process(pod, init, lookup, images, credentials, secrets, facts)
        for init in pod.spec.init_containers
    ]
    grace = pod.spec.termination_grace_period_seconds
    policy = _RESTART_POLICIES.get(pod.spec.restart_policy, "Always")
    return (
        Bundle(
            pod_uid=pod.uid,
            pod_name=pod.metadata.name,
            pod_namespace=pod.metadata.namespace,
            volumes=volumes,
            init_containers=inits,
            container=main,
            restart_policy=policy,
            termination_grace=30.0 if grace is None else float(grace),
            secret_values=sorted(secrets),
        ),
        secrets,
    )


_RESTART_POLICIES: dict[str, Literal["Always", "OnFailure", "Never"]] = {
    "Always": "Always",
    "OnFailure": "OnFailure",
    "Never": "Never",
}


async def _process(
    pod: Pod,
    container: Container,
    lookup: ObjectLookup,
    images: ImageConfigs,
    credentials: Mapping[str, tuple[str, str]],
    secrets: set[str],
    facts: InstanceFacts,
) -> ProcessSpec:
    env, values = await container_env(
        pod, container, lookup, address=facts.address, allocatable=facts.allocatable
    )
    secrets |= values
    lookup_var = env_lookup(env)
    command = [expand(part, lookup_var) for part in container.command]
    args = [expand(part, lookup_var) for part in container.args]
    if not command:
        config = await images.image_config(container.image.strip(), credentials=credentials)
        command = list(config.entrypoint)
        args = args or list(config.cmd)
    argv = command + args
    if not argv:
        raise SpecError(
            f'container "{container.name}" of pod {pod.key}: neither the pod nor the image '
            f"{container.image} says what to run (no command, no ENTRYPOINT or CMD)"
        )
    return ProcessSpec(
        name=container.name,
        argv=argv,
        env=list(env.items()),
        working_dir=container.working_dir,
        mounts=_mounts(pod, container, env),
        probes=_exec_probes(container),
        post_start=_hook(pod, container, "postStart"),
        pre_stop=_hook(pod, container, "preStop"),
        termination_message_path=container.termination_message_path,
        termination_message_policy=(
            "FallbackToLogsOnError"
            if container.termination_message_policy == "FallbackToLogsOnError"
            else "File"
        ),
    )


def _mounts(pod: Pod, container: Container, env: Mapping[str, str]) -> list[Mount]:
    """The mounts; a ``subPathExpr`` that cannot be used is the kubelet's
    ``CreateContainerConfigError`` (the pod waits with it; an edit is the fix)."""
    try:
        return container_mounts(pod, container, env)
    except SpecError as exc:
        raise CreateContainerConfigError(str(exc)) from None


class CreateContainerConfigError(SpecError):
    """The kubelet's reason for a container whose config cannot be made (a ``subPathExpr``
    that expands to an absolute path, or one with ``..``)."""

    reason = "CreateContainerConfigError"


def _hook(pod: Pod, container: Container, which: str) -> Hook | None:
    """A lifecycle handler as the agent runs it (a named port resolved here)."""
    lifecycle = container.lifecycle
    handler: LifecycleHandler | None = None
    if lifecycle is not None:
        handler = lifecycle.post_start if which == "postStart" else lifecycle.pre_stop
    if handler is None:
        return None
    if handler.exec is not None:
        return Hook(exec=list(handler.exec.command))
    if handler.sleep is not None:
        return Hook(sleep=float(handler.sleep.seconds))
    if handler.http_get is not None:
        action = handler.http_get
        return Hook(
            http=HttpHook(
                port=_port(pod, container, action.port, which),
                host=action.host or "",
                scheme="HTTPS" if action.scheme.upper() == "HTTPS" else "HTTP",
                path=action.path or "/",
                headers=[(h.name, h.value) for h in action.http_headers],
            )
        )
    return None  # tcpSocket: deprecated, and a no-op in the kubelet


def _port(pod: Pod, container: Container, port: int | str, which: str) -> int:
    """A hook's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for declared in container.ports:
        if declared.name == port:
            return declared.container_port
    raise SpecError(
        f'{which} hook of container "{container.name}" in pod {pod.key}: port "{port}" is not'
        " a named port of the container"
    )


_KINDS: tuple[tuple[Literal["liveness", "readiness", "startup"], str], ...] = (
    ("startup", "startup_probe"),
    ("readiness", "readiness_probe"),
    ("liveness", "liveness_probe"),
)


def _exec_probes(container: Container) -> list[ExecProbe]:
    """The container's exec probes, which the agent runs inside the instance."""
    probes = []
    for kind, attribute in _KINDS:
        probe: Probe | None = getattr(container, attribute)
        if probe is not None and probe.exec is not None:
            probes.append(
                ExecProbe(
                    kind=kind,
                    command=list(probe.exec.command),
                    initial_delay=float(probe.initial_delay_seconds),
                    period=float(probe.period_seconds),
                    timeout=float(probe.timeout_seconds),
                    success_threshold=probe.success_threshold,
                    failure_threshold=probe.failure_threshold,
                )
            )
    return probes
