"""The runtime half: ``vk-trio agent``, which runs inside each instance as its first process.

It receives the pod's bundle over the link (``link.py``, ``protocol.py``), writes the pod's
volumes, runs its init containers and then its container's process, restarts that process in
place, keeps its output, and answers the node's questions about all of it. It imports nothing
of the node, Kubernetes or Vast: it runs alone, in whatever image the pod names.
"""
