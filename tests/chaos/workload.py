"""The workload driver: keep about N GPU pods live on the node, deleting and creating at random.

Pods are created as a scheduler would leave them (``spec.nodeName`` set: the stand-in has no
scheduler), selecting the virtual node and tolerating its taint, with the annotations users
write. Deletions are mostly graceful (``kubectl delete``: the node must destroy the instance,
then remove the pod) and sometimes forced (grace 0: the pod vanishes at once, perhaps while
no node process runs, and only the reaper can still find its instance). Each pod's UID and
price cap are recorded here, because a deleted pod's cap is no longer in the API and the
audit needs it.

In the agent mode (``--agent``) every instance runs its process for real, so each pod has a
command the sandbox can run (the host's userland, ``busybox:1.36`` by name), and half of them
(``AGENT_SHARE``, never interruptible) run under the agent: a ConfigMap and a Secret mounted
as volumes, the Secret env var, ``vast.ai/agent: "true"``, an init container for some, and a
command that reads the files and then sleeps. The other half take no Secret at all (a Secret
env var alone would put them under the agent too), so that in this mode no Secret value has
any business in a create request.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import httpx
import msgspec
import trio

from tests.chaos.plan import Plan

NAMESPACE = "chaos"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
PRICE_CAPS = (0.30, 0.45, 0.60, 1.00)
"""``vast.ai/price-max`` values, drawn per pod; ``market`` lists offers on both sides."""
RESTART_POLICIES = ("Always",) * 8 + ("OnFailure", "Never")
"""Mostly ``Always``; a few pods may end Failed (an exit fault) and must then free their GPU."""
INTERRUPTIBLE = 0.25
"""Fraction of pods that bid (``vast.ai/interruptible``): their cap covers bid plus storage;
the soak outbids their instances."""
OUTBID_POLICIES = ("wait", "rebid", "replace")
"""``vast.ai/on-outbid``, drawn per interruptible pod."""
OUTBID_GRACE = "3s"
"""``vast.ai/outbid-grace``: short, so that every policy plays out within a soak."""
RAMP_SECONDS = 10.0
"""The first N pods are created over this long (at most a quarter of the soak)."""
SECRET_NAME = "chaos-token"
SECRET_VALUE = "hf_chaos-S3CRET-value-7f3a"
"""Every pod reads it into its env (``secretKeyRef``): it must reach the instance and nothing
else; the audit scans the node's logs, the Events and the pods for it. In the agent mode only
the agent's pods read it, and it must not reach Vast either."""
AGENT_SHARE = 0.5
"""Fraction of the pods that run under the agent, in the agent mode."""
INIT_SHARE = 0.3
"""Fraction of the agent's pods with an init container (it checks the ConfigMap's file)."""
APP_CONFIG = "chaos-app-config"
APP_SECRET = "chaos-app-secret"
APP_SECRET_VALUE = "chaos-file-S3CRET-9c1e"
"""The Secret volume's one file, in the agent mode: over the link only, never to Vast."""
SECRET_VALUES = (SECRET_VALUE, APP_SECRET_VALUE)
"""Every Secret value the workload creates: the audit looks for each in the create requests
(agent mode) and in the node's outputs."""
AGENT_COMMAND = "cat /etc/app/app.conf /etc/secret/app.key >/dev/null && exec sleep 3600"
"""Fails at once if a volume is missing; otherwise never exits during a soak, so any
restart of it is the node's or the agent's doing."""


class PodRecord(msgspec.Struct, kw_only=True):
    """A pod the workload created, as the audit needs it after the pod is gone."""

    name: str
    uid: str
    price_max: float
    interruptible: bool = False
    agent: bool = False
    """Runs under the vk-trio agent (the agent mode)."""


def gpu_pod(
    name: str, node: str, *, price_max: float, restart_policy: str, on_outbid: str | None
) -> dict[str, Any]:
    """A one-GPU pod bound to ``node`` (the shape of ``deployments/examples``); interruptible
    with that ``vast.ai/on-outbid`` policy unless ``on_outbid`` is None."""
    bidding = {
        "vast.ai/interruptible": "true",
        "vast.ai/on-outbid": on_outbid,
        "vast.ai/outbid-grace": OUTBID_GRACE,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": "chaos"},
            "annotations": {
                "vast.ai/gpu-type": "RTX 3090",
                "vast.ai/gpu-fallbacks": "RTX 4090,RTX 3060",
                "vast.ai/price-max": f"{price_max:.2f}",
                **(bidding if on_outbid is not None else {}),
            },
        },
        "spec": {
            "nodeName": node,
            "nodeSelector": {"type": "virtual-kubelet"},
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "restartPolicy": restart_policy,
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "env": [
                        {
                            "name": "HF_TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "token"}},
                        }
                    ],
                }
            ],
        },
    }


def plain_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` as the agent mode's other half runs it: a command the sandbox can run, no
    Secret (a Secret env var would put it under the agent)."""
    container = pod["spec"]["containers"][0]
    container.update(image="busybox:1.36", command=["sleep", "3600"])
    container["env"] = [{"name": "MODE", "value": "plain"}]
    return pod


def agent_pod(pod: dict[str, Any], *, init: bool) -> dict[str, Any]:
    """``pod`` under the agent: the ConfigMap and the Secret as volumes, the Secret env var
    kept, ``vast.ai/agent: "true"``, and an init container in the same image if ``init``."""
    pod["metadata"]["annotations"]["vast.ai/agent"] = "true"
    container = pod["spec"]["containers"][0]
    container.update(
        image="busybox:1.36",
        command=["sh", "-c", AGENT_COMMAND],
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/app"},
            {"name": "secret", "mountPath": "/etc/secret", "readOnly": True},
        ],
    )
    pod["spec"]["volumes"] = [
        {"name": "config", "configMap": {"name": APP_CONFIG}},
        {"name": "secret", "secret": {"secretName": APP_SECRET, "defaultMode": 0o400}},
    ]
    if init:
        pod["spec"]["initContainers"] = [
            {
                "name": "check-config",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "test -s /etc/app/app.conf"],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
            }
        ]
    return pod


class _CreatedMeta(msgspec.Struct):
    uid: str


class _Created(msgspec.Struct):
    metadata: _CreatedMeta


class Workload:
    """Creates and deletes the soak's pods; ``records`` maps every UID it created."""

    def __init__(self, kube: httpx.AsyncClient, plan: Plan, *, node: str) -> None:
        self._kube = kube
        self._plan = plan
        self._node = node
        self._rng = random.Random(f"{plan.seed}:workload")
        self._live: list[PodRecord] = []
        self.records: dict[str, PodRecord] = {}
        self.deleted = 0
        self.forced = 0

    async def prepare(self) -> None:
        """Create the namespace the pods live in, and the Secret they read."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await _send(self._kube, "POST", "/api/v1/namespaces", body)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": NAMESPACE},
            "data": {"token": base64.b64encode(SECRET_VALUE.encode()).decode()},
        }
        await _send(self._kube, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        if self._plan.agent:
            await self._prepare_agent_objects()

    async def _prepare_agent_objects(self) -> None:
        """The ConfigMap and the Secret the agent's pods mount."""
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": APP_CONFIG, "namespace": NAMESPACE},
            "data": {"app.conf": "mode=chaos\n"},
        }
        await _send(self._kube, "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", config)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": APP_SECRET, "namespace": NAMESPACE},
            "data": {"app.key": base64.b64encode(APP_SECRET_VALUE.encode()).decode()},
        }
        await _send(self._kube, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)

    async def run(self) -> None:
        """Ramp up to ``plan.pods`` pods, then replace pods at random until cancelled."""
        ramp = min(RAMP_SECONDS, self._plan.duration / 4)
        for _ in range(self._plan.pods):
            await self._create()
            await trio.sleep(ramp / self._plan.pods)
        while True:
            await trio.sleep(self._rng.expovariate(self._plan.replacements_per_second))
            await self._delete(self._rng.choice(self._live))
            await self._create()

    async def _create(self) -> None:
        name = f"gpu-{len(self.records):05d}"
        # Drawn only in the agent mode, so that other soaks keep their seeded sequence.
        agent = self._plan.agent and self._rng.random() < AGENT_SHARE
        price_max = self._rng.choice(PRICE_CAPS)
        # The agent's pods never bid: an outbid instance boots anew, and its process with it.
        interruptible = self._rng.random() < INTERRUPTIBLE and not agent
        pod = gpu_pod(
            name,
            self._node,
            price_max=price_max,
            restart_policy=self._rng.choice(RESTART_POLICIES),
            on_outbid=self._rng.choice(OUTBID_POLICIES) if interruptible else None,
        )
        if agent:
            pod = agent_pod(pod, init=self._rng.random() < INIT_SHARE)
        elif self._plan.agent:
            pod = plain_pod(pod)
        created = msgspec.json.decode(await _send(self._kube, "POST", PODS, pod), type=_Created)
        record = PodRecord(
            name=name,
            uid=created.metadata.uid,
            price_max=price_max,
            interruptible=interruptible,
            agent=agent,
        )
        self.records[record.uid] = record
        self._live.append(record)

    async def _delete(self, record: PodRecord) -> None:
        forced = self._rng.random() < self._plan.force_delete
        grace = 0 if forced else 30
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace}
        await _send(self._kube, "DELETE", f"{PODS}/{record.name}", body)
        self._live.remove(record)
        self.deleted += 1
        self.forced += forced


async def _send(kube: httpx.AsyncClient, method: str, path: str, body: object) -> bytes:
    """One Kubernetes API call with a JSON body; raises on any error (the stand-in has none)."""
    response = await kube.request(
        method,
        path,
        content=msgspec.json.encode(body),
        headers={"content-type": "application/json"},
    )
    response.raise_for_status()
    return response.content
