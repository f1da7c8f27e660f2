"""The simulators: the Vast.ai API (``vast/``) and a Kubernetes API stand-in (``kube/``)."""
