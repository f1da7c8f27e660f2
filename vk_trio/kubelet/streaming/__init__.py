"""The kubelet's streaming endpoints (``/exec``, ``/attach``, ``/portForward``): the sessions
``kubectl`` opens through the API server, over SPDY/3.1 or WebSocket.

``websocket`` holds the WebSocket side (the channel protocols and their trio transport);
``declared_features`` says what a node declares so that the API server proxies WebSocket
requests straight to this kubelet instead of translating them to SPDY itself.
"""
