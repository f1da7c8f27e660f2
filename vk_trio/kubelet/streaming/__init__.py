"""The kubelet's streaming endpoints: ``kubectl exec``, ``attach`` and ``port-forward``.

Two layers, so that a second transport can carry the same sessions:

- a *transport* turns one upgraded connection into byte streams: ``spdy_transport`` (SPDY/3.1,
  what the API server speaks to a kubelet up to 1.35, and on 1.36+ unless the node
  advertises WebSocket), each stream with its ``streamType`` header. A WebSocket transport
  (channels by number) plugs in beside it;
- a *session* relays those streams to the provider: ``remotecommand`` (exec and attach: stdin,
  stdout, stderr, terminal resizes, and the final Status on the error stream) and
  ``portforward`` (one provider connection per data/error stream pair). Sessions read and
  write through the small ``Source``/``Sink`` protocols in ``remotecommand``, which a SPDY
  stream and a WebSocket channel both satisfy. A WebSocket transport builds
  ``remotecommand.Channels`` from its channels and calls ``relay``, and calls
  ``portforward.forward`` once per port's data/error channel pair; ``routes`` is where it
  plugs in (today a WebSocket upgrade is refused there, so that clients fall back to SPDY).

``handshake`` holds what both share before the upgrade: parsing the query like the kubelet,
and negotiating ``X-Stream-Protocol-Version``.
"""
