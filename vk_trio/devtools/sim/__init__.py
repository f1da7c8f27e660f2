"""The simulators: the Vast.ai API (``vast/``), a Kubernetes API stand-in (``kube/``) and a
container registry (``registry/``)."""
