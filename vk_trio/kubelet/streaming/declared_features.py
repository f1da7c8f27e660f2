"""What a node declares so that the API server proxies exec/attach/port-forward WebSockets
straight to its kubelet (Kubernetes 1.36+), instead of translating them to SPDY itself.

Found in the Kubernetes sources and docs (read, not copied):

- It is a Node *status* field, not an annotation or a kubelet config:
  ``node.status.declaredFeatures``, a list of strings, "sorted alphabetically and contains no
  duplicate entries" (KEP-5328 Node Declared Features,
  ``keps/sig-node/5328-node-declared-features/README.md`` in kubernetes/enhancements; the
  field came with kubernetes/kubernetes#133389). The kubelet fills it at start from its
  feature registry, ``staging/src/k8s.io/component-helpers/nodedeclaredfeatures/``.
- The feature's name there is ``ExtendWebSocketsToKubelet``
  (``.../nodedeclaredfeatures/features/extendwebsocketstokubelet/feature.go``): a kubelet
  declares it when its own gate of that name is on; it plays no part in scheduling or pod
  updates.
- The API server's pod ``exec``/``attach``/``portforward`` connectors check that the node's
  declared features contain ``ExtendWebSocketsToKubelet`` (``checkNodeSupportsWebsockets`` in
  ``pkg/registry/core/pod/rest/subresources.go``, tests in ``subresources_test.go``); if so
  they proxy the upgrade unchanged (``proxy_type="proxied_to_kubelet"`` in
  ``apiserver_websocket_streaming_requests_total``), otherwise they translate v5 to SPDY
  (exec, attach) or tunnel (port-forward) at the API server as before
  (kubernetes/kubernetes#136256; KEP-4006 update kubernetes/enhancements#5792; the feature
  gate page ``content/en/docs/reference/command-line-tools-reference/feature-gates/
  extend-websockets-to-kubelet.md`` in kubernetes/website: beta, on by default, from 1.36).
- The field is marked ``+featureGate=NodeDeclaredFeatures`` in the KEP's API change; by the
  usual dropping of disabled fields an API server with that gate off ignores it, and one with
  ``ExtendWebSocketsToKubelet`` off never proxies, so declaring it is harmless on such
  clusters. (Inferred from the KEP and the gate pages, not traced through the code.)
- Which protocols then reach the kubelet: whatever the client offered, since the upgrade is
  proxied unchanged; the kubelet runs the same translator (v5 only) and tunneling handler
  as the API server used to, and its own v4 channel handlers otherwise
  (``staging/src/k8s.io/apiserver/pkg/util/proxy/websocket.go``, ``streamtunnel.go``).

So a node whose kubelet serves the WebSocket protocols (``v5.channel.k8s.io`` for exec and
attach, ``SPDY/3.1+portforward.k8s.io`` tunneling and the v4 channels for port-forward; see
``vk_trio.kubelet.streaming.websocket``) puts ``ExtendWebSocketsToKubelet`` in
``status.declaredFeatures``; one that does not must leave it out, or ``kubectl exec`` breaks
(what minikube hit with cri-dockerd on 1.36, kubernetes/minikube#22921).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DECLARED_FEATURES_FIELD", "EXTEND_WEBSOCKETS_TO_KUBELET", "declared_features"]

EXTEND_WEBSOCKETS_TO_KUBELET = "ExtendWebSocketsToKubelet"
"""The declared feature the API server looks for before proxying WebSocket to the kubelet."""

DECLARED_FEATURES_FIELD = "declaredFeatures"
"""The field under the Node's ``status`` that carries the list."""


def declared_features(*, websocket_streaming: bool, others: Iterable[str] = ()) -> list[str]:
    """The value of ``node.status.declaredFeatures``: sorted, without duplicates.

    ``websocket_streaming`` is whether this kubelet serves exec, attach and port-forward over
    WebSocket itself; ``others`` are further features the node declares.
    """
    features = set(others)
    if websocket_streaming:
        features.add(EXTEND_WEBSOCKETS_TO_KUBELET)
    return sorted(features)
