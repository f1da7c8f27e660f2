"""Pods the node refuses to rent a GPU for, and why: one rule for the node and the dry run.

Node agents with blanket tolerations (CNI, kube-proxy, log shippers) are DaemonSet pods that
land on every node, this one included; a mirror pod is a static pod that runs from some
kubelet's disk. Renting a GPU for either would bill for nothing anyone asked for. The pod
supervisor reports the reason as the pod's status; ``vk-trio offers`` prints it instead of an
offer it would buy.
"""

from __future__ import annotations

from vk_trio.kube.models import Pod

__all__ = ["MIRROR", "unsupported_reason"]

MIRROR = "kubernetes.io/config.mirror"
"""The annotation the kubelet puts on the API-server copy of a static pod."""


def unsupported_reason(pod: Pod) -> str | None:
    """Why this pod must not get a GPU, or None."""
    if any(owner.kind == "DaemonSet" for owner in pod.metadata.owner_references):
        return (
            "DaemonSet pods do not run on the Vast.ai virtual node: give the DaemonSet a "
            "nodeAffinity that excludes type=virtual-kubelet (see the README)"
        )
    if MIRROR in pod.metadata.annotations:
        return "static (mirror) pods run on their own kubelet, never on the Vast.ai virtual node"
    return None
