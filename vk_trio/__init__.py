"""vk-trio: a Kubernetes Virtual Kubelet on Trio that runs pods on rented Vast.ai GPU instances.

Layers (each may import only those below it):

- ``cli`` > ``app`` / ``demo`` / ``dryrun`` > ``pods`` (the lifecycle)
- ``kube`` | ``vast`` (the two clients: they never import each other) and ``offers`` (pure
  selection over ``vast``'s models)
- ``errors`` | ``http_server`` | ``logs`` (shared by everything)

``sim`` holds the stand-ins for tests and the demo; of the product, only the commands that
offer them (``cli``, ``demo``, ``dryrun``) import it. ``tests/test_layers.py`` checks all this.
"""

__version__ = "0.1.0"
