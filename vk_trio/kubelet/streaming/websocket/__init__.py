"""The WebSocket side of the kubelet's streaming endpoints: exec, attach and port-forward as
``kubectl`` speaks them when the API server proxies its WebSocket straight to the kubelet.

``protocol`` is the sans-IO part (negotiation, channel framing, port prefixes, resize and
status encodings), ``transport`` runs it on a trio stream. The SPDY/3.1 side lives in
``vk_trio.kubelet.spdy``; a tunneled port-forward (``SPDY/3.1+portforward.k8s.io``) runs that
SPDY session over ``transport.WebSocketTunnel``.

Why a kubelet needs this from Kubernetes 1.36 on: with the API server's
``ExtendWebSocketsToKubelet`` gate (beta, on by default) a node that declares
``ExtendWebSocketsToKubelet`` in ``status.declaredFeatures`` gets the client's WebSocket
upgrade proxied unchanged, instead of the API server translating it to SPDY (see
``vk_trio.kubelet.streaming.declared_features``). A node that does not declare it keeps
receiving SPDY only.
"""
