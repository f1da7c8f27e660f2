"""Where the node's instances get the vk-trio agent, decided once at start.

In this order:

1. ``--agent-url`` (with ``--agent-sha256``, or the digest found as ``runtime.agent_delivery``
   says): the operator's choice wins;
2. else the image ``--agent-image`` names, or, unset, **the node's own image**: the agent is
   the node's own binary, and the node's image (``FROM scratch``, one layer holding
   ``/vk-trio``, the CA bundle, ``/etc/passwd`` and ``/tmp``) is already in a registry the
   cluster pulled it from. The node reads its own pod (``POD_NAMESPACE``/``POD_NAME``, the
   downward API's, which the Deployment sets): the container's ``imageID`` in
   ``status.containerStatuses`` pins the digest it runs (``docker-pullable://repo@sha256:...``
   or ``repo@sha256:...``), else ``spec.containers[].image`` is taken as it is. The registry
   then says the ``linux/amd64`` manifest's layers (``RegistryClient.image_layers``); the
   agent's is **the last layer** (the image has one: the last is also right for an image
   built ``FROM`` another with vk-trio added on top). Instances get that blob's URL, its
   digest and the registry's anonymous token URL, and fetch it themselves
   (``vk_trio.agent.bootstrap``);
3. else no agent: pods that need it are refused (``AgentNotConfigured``) with the reason
   found here, e.g. that the node's image is private.

A private image cannot be fetched by an instance without the pull secret, which the node
does not hand out: it is refused with one log line saying to set ``--agent-url``. The
discovery is bounded (``DISCOVERY_TRIES`` tries within ``DISCOVERY_WITHIN`` seconds): a
registry or API server that does not answer delays the node's start a little, never stops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio
from loguru import logger

from vk_trio.config import Settings
from vk_trio.errors import TemporaryError
from vk_trio.kube.api import KubeClient
from vk_trio.kube.errors import KubeError, KubeNotFound
from vk_trio.kube.pods import pod_path
from vk_trio.provider.runtime import NO_AGENT, AgentDelivery, agent_delivery, link_master
from vk_trio.registry import (
    IMAGE_UNAUTHORIZED,
    ImageConfigUnavailable,
    ImageLayers,
    RegistryClient,
    RegistryError,
)

__all__ = ["DISCOVERY_TRIES", "DISCOVERY_WITHIN", "AgentSource", "find_agent", "pod_image"]

DISCOVERY_TRIES = 3
"""Tries to read the node's pod and its image's manifest (1 s, then 2 s apart)."""
DISCOVERY_WITHIN = 45.0
"""Seconds the whole discovery may take before the node starts without an agent."""
NODE_CONTAINER = "virtual-kubelet"
"""The node's container in the Deployment, for a pod with more than one (a sidecar)."""


@dataclass(frozen=True)
class AgentSource:
    """The delivery, or None and why (words for ``agent_placement``'s refusal)."""

    delivery: AgentDelivery | None
    missing: str = NO_AGENT


class _NoAgent(Exception):
    """Discovery found no agent: the message says why (the refusal's words)."""


async def find_agent(
    settings: Settings, kube: KubeClient, *, registry: RegistryClient | None = None
) -> AgentSource:
    """Where instances get the agent (module doc), logged in one line. Raises
    ``ConfigError`` only for ``--agent-url`` (as ``agent_delivery``); nothing else stops
    the node: failures are an ``AgentSource`` without a delivery."""
    delivery = await agent_delivery(settings)
    if delivery is not None:
        logger.info("agent: instances download it from --agent-url", url=delivery.url)
        return AgentSource(delivery)
    try:
        with trio.fail_after(DISCOVERY_WITHIN):
            delivery = await _from_image(settings, kube, registry)
    except trio.TooSlowError:
        return _without(f"the node's image could not be read within {DISCOVERY_WITHIN:g} s")
    except _NoAgent as exc:
        return _without(str(exc))
    logger.info(
        "agent: instances fetch it from the node image's layer",
        layer=delivery.url,
        anonymous_token=bool(delivery.token_url),
    )
    return AgentSource(delivery)


def _without(why: str) -> AgentSource:
    logger.warning("agent: none, pods that need it are refused: {}", why)
    return AgentSource(None, why)


async def _from_image(
    settings: Settings, kube: KubeClient, registry: RegistryClient | None
) -> AgentDelivery:
    image = settings.agent_image or await _own_image(settings, kube)
    if registry is None:
        async with RegistryClient(total_timeout=DISCOVERY_WITHIN / DISCOVERY_TRIES) as own:
            layers = await _layers(own, image)
    else:
        layers = await _layers(registry, image)
    url, digest = _agent_layer(image, layers)
    return AgentDelivery(url, digest, link_master(settings), layer=True, token_url=layers.token_url)


async def _own_image(settings: Settings, kube: KubeClient) -> str:
    """The node's own image, by digest when the pod's status says it."""
    name, namespace = settings.leader_elect_identity, settings.leader_elect_namespace
    if not name:
        raise _NoAgent(
            "this node has no --agent-url (AGENT_URL), no --agent-image, and does not know "
            "its own pod (POD_NAME unset: not run in a cluster) to find its image"
        )
    pod: Any = None
    for attempt in range(DISCOVERY_TRIES):
        try:
            pod = await kube.request("GET", pod_path(namespace, name))
            break
        except KubeError as exc:
            if attempt + 1 == DISCOVERY_TRIES or isinstance(exc, KubeNotFound):
                raise _NoAgent(
                    f"the node's own pod {namespace}/{name} was not read: {exc}"
                ) from exc
            await trio.sleep(attempt + 1)
    image = pod_image(pod or {})
    if image is None:
        raise _NoAgent(f"the node's own pod {namespace}/{name} names no image")
    return image


def pod_image(pod: Mapping[str, Any]) -> str | None:
    """The image the node's container runs: its status's ``imageID`` when that names a
    digest in a repository, else its spec's ``image``; the container is the only one, else
    ``NODE_CONTAINER``, else the first. None when the pod has no container."""
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        return None
    chosen = next((c for c in containers if c.get("name") == NODE_CONTAINER), containers[0])
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status: Mapping[str, Any] = next(
        (s for s in statuses if s.get("name") == chosen.get("name")), {}
    )
    image_id = str(status.get("imageID") or "")
    image_id = image_id.split("://", 1)[-1]  # docker-pullable://, docker://
    if "@sha256:" in image_id and not image_id.startswith("sha256:"):
        return image_id
    spec_image = str(chosen.get("image") or "").strip()
    return spec_image or None


async def _layers(registry: RegistryClient, image: str) -> ImageLayers:
    """The image's layers, asked again on a temporary failure; a private image is final."""
    for attempt in range(DISCOVERY_TRIES):
        try:
            return await registry.image_layers(image)
        except ImageConfigUnavailable as exc:
            if exc.reason == IMAGE_UNAUTHORIZED:
                raise _NoAgent(
                    f"the node's image {image} is private (an instance cannot fetch the agent "
                    "from it without the pull secret); set --agent-url (AGENT_URL)"
                ) from exc
            if attempt + 1 == DISCOVERY_TRIES or not isinstance(exc, TemporaryError):
                raise _NoAgent(f"the node's image {image} could not be read: {exc}") from exc
        except RegistryError as exc:  # an invalid reference
            raise _NoAgent(f"the node's image {image} could not be read: {exc}") from exc
        await trio.sleep(attempt + 1)
    raise AssertionError("unreachable")


def _agent_layer(image: str, layers: ImageLayers) -> tuple[str, str]:
    """The blob URL and SHA-256 (hex) of the layer holding ``vk-trio``: the last one."""
    if not layers.layers:
        raise _NoAgent(f"the node's image {image} has no layers")
    last = layers.layers[-1]
    algorithm, _, digest = last.digest.partition(":")
    if algorithm != "sha256":
        raise _NoAgent(f"the last layer of {image} is not by SHA-256 ({last.digest})")
    if last.media_type and "gzip" not in last.media_type:
        raise _NoAgent(
            f"the last layer of {image} is {last.media_type}; the bootstrap unpacks gzip "
            "layers only: set --agent-url"
        )
    return layers.url(last), digest
