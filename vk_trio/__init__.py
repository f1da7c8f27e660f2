"""vk-trio: a Kubernetes Virtual Kubelet on Trio that runs pods on rented Vast.ai GPU instances.

Layers (each may import only those below it):

- ``cli`` > ``app`` / ``demo`` > ``pods`` (the lifecycle)
- ``kube`` | ``vast`` | ``offers`` (clients and pure selection; siblings never import each other)
- ``errors`` | ``http_server`` | ``logs`` (shared by everything)

``kube`` and ``vast`` never import each other; ``sim`` is a test/demo stand-in and is imported
by nothing in the product path except ``cli`` and ``demo``.
"""

__version__ = "0.1.0"
