"""The kubelet API a virtual node serves on 10250: ``kubectl logs``, ``top``, ``get --raw``.

``server`` routes the kubelet's HTTP paths to a ``backend.KubeletBackend`` (the provider
implements it; this package knows no provider), behind ``auth`` (client certificates and
TokenReview, SubjectAccessReview per request) and TLS from ``certs`` (files, a
kubelet-serving CSR, or a loudly logged self-signed fallback). ``logs`` turns the full-log
snapshots a provider can fetch into the kubelet's log semantics (tail, since, follow...).

This package imports ``vk_trio.kube`` (the API client, models) and never a provider.
"""
