"""Instance labels: how every instance vk-trio rents names the one pod it was rented for.

Every instance is labelled ``vk-trio/<node>/<namespace>/<pod>/<uid>`` at creation, so a
restarted process finds what an earlier one rented, a lost create answer is found by its
label, and the reaper can ask the API server whether the named pod still exists. Names and
namespaces are DNS labels/subdomains (no ``/``), so the label splits unambiguously, and the
longest one (about 620 characters) fits Vast's 1,024.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LabelOwner", "instance_label", "label_owner"]


class LabelOwner(NamedTuple):
    """The pod an instance label names."""

    namespace: str
    name: str
    uid: str


def instance_label(node: str, namespace: str, name: str, uid: str) -> str:
    """The label every instance bought for a pod carries."""
    return f"vk-trio/{node}/{namespace}/{name}/{uid}"


def label_owner(label: str | None, node: str) -> LabelOwner | None:
    """The pod an instance label of ``node`` names, or None for anything else."""
    prefix = f"vk-trio/{node}/"
    if not label or not label.startswith(prefix):
        return None
    parts = label[len(prefix) :].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return LabelOwner(*parts)
