"""The kubelet's streaming endpoints: ``kubectl exec``, ``attach`` and ``port-forward``.

Two layers, so that both transports carry the same sessions:

- a *transport* turns one upgraded connection into byte streams: ``spdy_transport`` (SPDY/3.1,
  what the API server speaks to a kubelet up to 1.35, and on 1.36+ unless the node
  declares WebSocket support), each stream with its ``streamType`` header; ``websocket``
  (the channel protocols and their trio transport: channels by number);
- a *session* relays those streams to the provider: ``remotecommand`` (exec and attach: stdin,
  stdout, stderr, terminal resizes, and the final Status on the error stream) and
  ``portforward`` (one provider connection per data/error stream pair). Sessions read and
  write through the small ``Source``/``Sink`` protocols in ``remotecommand``, which a SPDY
  stream and a WebSocket channel both satisfy; ``routes`` picks the transport by the
request's ``Upgrade`` (``websocket_routes`` adapts the WebSocket channels to the sessions).

``handshake`` holds what both share before the upgrade: parsing the query like the kubelet,
and negotiating ``X-Stream-Protocol-Version``. ``declared_features`` says what a node declares
so that the API server proxies WebSocket requests straight to this kubelet instead of
translating them to SPDY itself.
"""
