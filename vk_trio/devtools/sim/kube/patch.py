"""The three PATCH flavours the Kubernetes API server accepts, on plain JSON values.

* strategic merge patch (``application/strategic-merge-patch+json``): like a merge patch, but
  lists that Kubernetes declares with ``patchStrategy: merge`` are merged item by item on their
  merge key (``conditions`` by ``type``, ``containers`` by ``name``...). This is what keeps a
  kubelet's status patch from wiping the scheduler's ``PodScheduled`` condition, so the simulator
  must get it right for the node code under test to be meaningful.
* JSON merge patch (RFC 7386, ``application/merge-patch+json``): objects merge, ``null`` deletes,
  everything else (lists included) replaces.
* JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations on JSON pointers.

Every function returns a new value and leaves its inputs alone. Malformed patches raise
``PatchError`` with the HTTP status the real API server answers with (400 for a body that is
not a patch, 422 for a JSON patch whose operation cannot apply, ``test`` included).
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS: dict[str, str] = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "addresses": "type",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "podIPs": "ip",
    "hostIPs": "ip",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
"""List fields merged item by item, and the key that identifies an item (from the Go types'
``patchMergeKey`` tags). Keyed by field name alone: the few clashes in the real schema (a
Service's ``ports`` merge on ``port``) are handled by falling back to replacement when an item
lacks the key, which is also what keeps a malformed list from being half-merged."""

PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})
"""Lists of strings with ``patchStrategy: merge``: a patch adds to them rather than replacing."""

_DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/"


class PatchError(Exception):
    """A patch that cannot be applied; ``status`` is the HTTP code the API server would use."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, covering what kubelets and kubectl send.

    Supported: merge-keyed lists (``MERGE_KEYS``), ``{"$patch": "delete"}`` on a list item,
    ``$deleteFromPrimitiveList/<field>`` and union for ``finalizers``. Other ``$``-directives
    (``$setElementOrder``, ``$retainKeys``) are ignored: they only tune ordering and pruning.
    """
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object", status=400)
    return _smp_object(target if isinstance(target, dict) else {}, patch)


def _smp_object(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE):
            field = key.removeprefix(_DELETE_FROM_PRIMITIVE)
            result[field] = [v for v in result.get(field) or [] if v not in (value or [])]
        elif key.startswith("$"):
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = _smp_object(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = value
    return result


def _smp_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    current = target if isinstance(target, list) else []
    if field in PRIMITIVE_MERGE_LISTS:
        return current + [v for v in patch if v not in current]
    key = MERGE_KEYS.get(field)
    items = current + patch
    if key is None or not all(isinstance(i, dict) and key in i for i in items):
        return [_strip_directives(v) for v in patch]
    merged = list(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old[key] == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = _smp_object(merged[index], item)
    return merged


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    return copy.deepcopy(value)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply ``add``/``remove``/``replace``/``move``/``copy``/``test`` in order."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a JSON array of operations", status=400)
    document = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid json patch operation: {operation!r}", status=400)
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op, path = operation["op"], _pointer(operation["path"])
    if op == "test":
        if _get(document, path) != operation.get("value"):
            raise PatchError(f"testing value {operation['path']} failed: test operation failed")
        return document
    if op == "remove":
        return _remove(document, path)
    if op == "replace":
        _get(document, path)
        return _add(_remove(document, path), path, copy.deepcopy(operation.get("value")))
    if op == "add":
        return _add(document, path, copy.deepcopy(operation.get("value")))
    source = _pointer(operation.get("from", ""))
    value = copy.deepcopy(_get(document, source))
    if op == "move":
        return _add(_remove(document, source), path, value)
    if op == "copy":
        return _add(document, path, value)
    raise PatchError(f"unknown json patch operation {op!r}", status=400)


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise PatchError(f"invalid JSON pointer {text!r}", status=400)
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or int(token) > len(container) - (0 if allow_end else 1):
        raise PatchError(f"array index {token!r} out of range")
    return int(token)


def _get(document: Any, path: list[str]) -> Any:
    node = document
    for token in path:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"path /{'/'.join(path)} does not exist")
    return node


def _add(document: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(document, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise PatchError(f"cannot add at /{'/'.join(path)}")
    return document


def _remove(document: Any, path: list[str]) -> Any:
    if not path:
        return None
    parent = _get(document, path[:-1])
    token = path[-1]
    if isinstance(parent, dict) and token in parent:
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, allow_end=False)]
    else:
        raise PatchError(f"path /{'/'.join(path)} does not exist")
    return document
