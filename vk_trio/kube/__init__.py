"""The Kubernetes side of the node: one API client and the verbs a kubelet needs."""
