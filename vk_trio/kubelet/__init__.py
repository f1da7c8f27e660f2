"""The kubelet API a virtual node serves on 10250: ``kubectl logs``, ``top``, ``get --raw``.

``server`` routes the kubelet's HTTP paths: the node (``vk_trio.node.lookup``) says which pod
and container a request means, and the node's one ``Provider`` answers for the container it
runs (``logs``, ``usage``); this package knows no provider. Behind ``auth`` (client
certificates and TokenReview, SubjectAccessReview per request) and TLS from ``certs`` (files,
a kubelet-serving CSR, or a loudly logged self-signed fallback); ``stats`` and
``resource_metrics`` shape the usage figures for metrics-server.
``spdy`` is the SPDY/3.1 protocol (no I/O) that exec, attach and port-forward will ride on.

This package imports ``vk_trio.kube`` (the API client, models) and ``vk_trio.node`` (its
provider protocol and pod lookup), never a provider.
"""
