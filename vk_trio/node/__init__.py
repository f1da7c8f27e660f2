"""The kubelet half: pods on the virtual node, over one ``Provider`` (``provider.py``).

``dispatch`` routes watch events to one supervisor per pod UID and owns their nursery;
``supervisor`` runs one pod's ``lifecycle`` (restartPolicy, backoff, phases, deadline) and
its teardown, with the ``services`` the node's pods share; ``status`` and ``reporter`` turn
what it knows into the pod's status, Events and annotations; ``admission`` says which pods
the node refuses; ``probes`` runs the containers' probes against their public endpoints;
``endpoints`` writes the EndpointSlices of Services that route to the node's pods; ``lookup``
and ``logbook`` serve the kubelet API. Nothing here knows which backend runs pods.
"""
