"""The workload driver: keep about N GPU pods live on the node, deleting and creating at random.

Pods are created as a scheduler would leave them (``spec.nodeName`` set: the stand-in has no
scheduler), selecting the virtual node and tolerating its taint, with the annotations users
write. Deletions are mostly graceful (``kubectl delete``: the node must destroy the instance,
then remove the pod) and sometimes forced (grace 0: the pod vanishes at once, perhaps while
no node process runs, and only the reaper can still find its instance). Each pod's UID and
price cap are recorded here, because a deleted pod's cap is no longer in the API and the
audit needs it.
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
else; the audit scans the node's logs, the Events and the pods for it."""


class PodRecord(msgspec.Struct, kw_only=True):
    """A pod the workload created, as the audit needs it after the pod is gone."""

    name: str
    uid: str
    price_max: float
    interruptible: bool = False


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
        price_max = self._rng.choice(PRICE_CAPS)
        interruptible = self._rng.random() < INTERRUPTIBLE
        pod = gpu_pod(
            name,
            self._node,
            price_max=price_max,
            restart_policy=self._rng.choice(RESTART_POLICIES),
            on_outbid=self._rng.choice(OUTBID_POLICIES) if interruptible else None,
        )
        created = msgspec.json.decode(await _send(self._kube, "POST", PODS, pod), type=_Created)
        record = PodRecord(
            name=name, uid=created.metadata.uid, price_max=price_max, interruptible=interruptible
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
