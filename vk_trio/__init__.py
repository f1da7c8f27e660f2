"""vk-trio: a Kubernetes Virtual Kubelet on Trio that runs pods on rented Vast.ai GPU instances.

The parts, from the top (README, "How it works", has the whole map):

- ``cli`` dispatches to the commands by module name; ``app`` wires the node (``vk-trio run``),
  ``election`` runs the leader loop, ``dryrun`` is ``vk-trio offers``, ``startup`` the checks
  before the node registers, ``config`` the one settings table;
- ``node`` is the kubelet half (one supervisor per pod, behind the ``Provider`` protocol) and
  ``kubelet`` its HTTPS API; neither knows Vast;
- ``provider`` implements the protocol over Vast;
- ``kube`` and ``vast`` are the two API clients: neither imports the other, nor anything above;
- ``errors``, ``retry``, ``http_server``, ``logs``, ``metrics``, ``health``, ``annotations`` are
  shared by everything.

``devtools`` (the simulators, ``vk-trio bench``, ``vk-trio demo``) is not the product: nothing
in the product imports it (``dryrun --simulate`` is the one declared exception). The rules are
import-linter contracts in pyproject.toml, run by ``tests/test_imports.py``.
"""

__version__ = "0.1.0"
