"""The stand-in's scheduler rules: which nodes a pending pod fits, and which one it gets.

A small, documented subset of kube-scheduler, enough for the examples and for the node's tests
to see pods arrive the way they do on a real cluster (bound through the ``binding``
subresource, with ``PodScheduled`` and a ``Scheduled`` Event). A pod fits a node when:

* the node is Ready and not ``spec.unschedulable`` (a real cluster taints such nodes
  ``node.kubernetes.io/not-ready`` / ``unschedulable``; the same taints are used here, so a pod
  that tolerates them still fits, as it would there);
* every ``spec.nodeSelector`` label matches the node's labels;
* the required node affinity holds: one of ``nodeSelectorTerms`` whose ``matchExpressions``
  (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``, ``Lt`` on labels) and
  ``matchFields`` (``In``/``NotIn`` on ``metadata.name``) all hold;
* every ``NoSchedule``/``NoExecute`` taint of the node is tolerated (``PreferNoSchedule`` is a
  preference, ignored).

Among the nodes that fit, the one with the fewest non-terminal pods wins (ties: by name). That
is the whole scoring: no resources, ports, pod (anti-)affinity, topology spread, or preemption.
A pod that fits nowhere gets the real scheduler's message, e.g. ``0/2 nodes are available: 1
node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint
{virtual-kubelet.io/provider: vast}.`` (the preemption half of the real message is left out).

Pure functions on JSON objects; ``controllers`` runs them and writes the results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from vk_trio.devtools.sim.kube.kinds import Obj

SCHEDULER_NAME = "default-scheduler"

AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"


def fit_error(pod: Obj, node: Obj) -> str | None:
    """Why ``pod`` cannot go to ``node`` (the real scheduler's wording), or None if it fits."""
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return AFFINITY_MISMATCH
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if affinity is not None and not any(
        _term_matches(term, node) for term in affinity.get("nodeSelectorTerms") or []
    ):
        return AFFINITY_MISMATCH
    tolerations = spec.get("tolerations") or []
    for taint in _taints(node):
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            _tolerates(toleration, taint) for toleration in tolerations
        ):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    return None


def choose(pod: Obj, nodes: Iterable[Obj], load: Counter[str]) -> tuple[str | None, str]:
    """(the node for ``pod``, "") or (None, the FailedScheduling message). ``load`` counts the
    non-terminal pods already on each node."""
    nodes = list(nodes)
    if not nodes:
        return None, "no nodes available to schedule pods"
    errors: Counter[str] = Counter()
    fitting = []
    for node in nodes:
        error = fit_error(pod, node)
        if error is None:
            fitting.append(node["metadata"]["name"])
        else:
            errors[error] += 1
    if fitting:
        return min(fitting, key=lambda name: (load[name], name)), ""
    reasons = ", ".join(f"{count} {why}" for why, count in sorted(errors.items()))
    return None, f"0/{len(nodes)} nodes are available: {reasons}."


def _taints(node: Obj) -> list[Obj]:
    """The node's taints plus the ones the node lifecycle controller would add."""
    spec = node.get("spec") or {}
    taints = list(spec.get("taints") or [])
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if not ready:
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    if spec.get("unschedulable"):
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    return taints


def _tolerates(toleration: Obj, taint: Obj) -> bool:
    """``Toleration.ToleratesTaint``: an empty effect or key matches every one; ``Exists``
    ignores the value, ``Equal`` (the default operator) compares it."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("value", "") == taint.get("value", ""))


def _term_matches(term: Obj, node: Obj) -> bool:
    """A ``NodeSelectorTerm``: every expression and field requirement holds (an empty term
    matches nothing, as in the real scheduler)."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    values = {"metadata.name": node["metadata"]["name"]}
    return all(_requirement(e, labels) for e in expressions) and all(
        e.get("key") in values and _requirement(e, values) for e in fields
    )


def _requirement(expression: Obj, labels: dict[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator")
    wanted = expression.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in wanted
    if operator == "NotIn":
        return labels.get(key) not in wanted
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and len(wanted) == 1 and key in labels:
        try:
            have, limit = int(labels[key]), int(wanted[0])
        except ValueError:
            return False
        return have > limit if operator == "Gt" else have < limit
    return False
