"""Which pods the virtual node refuses to run, whatever the provider could do for them.

Node agents with blanket tolerations (CNI, kube-proxy, log shippers) are DaemonSet pods that
land on every node, this one included; a mirror pod is a static pod that runs from some
kubelet's disk. Renting a GPU for either would bill for something nobody asked for. The
node and ``vk-trio offers`` share this rule.
"""

from __future__ import annotations

from vk_trio.annotations import MIRROR
from vk_trio.kube.models import Pod

__all__ = ["unsupported_reason"]


def unsupported_reason(pod: Pod) -> str | None:
    """Why this pod must not run on the virtual node, or None."""
    if any(owner.kind == "DaemonSet" for owner in pod.metadata.owner_references):
        return (
            "DaemonSet pods do not run on the Vast.ai virtual node: give the DaemonSet a "
            "nodeAffinity that excludes type=virtual-kubelet (see the README)"
        )
    if MIRROR in pod.metadata.annotations:
        return "static (mirror) pods run on their own kubelet, never on the Vast.ai virtual node"
    return None
