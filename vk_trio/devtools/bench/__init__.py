"""``vk-trio bench``: N pods created at once on the real node process, measured end to end.

For each pod count it starts, each as its own process, the Vast simulator (``vk-trio sim
vast``, rate limits off, or Vast's real ones with ``--real-limits``), the Kubernetes stand-in
(``vk-trio sim kube``, or a cluster given with ``--kubeconfig``) and ``vk-trio run`` with its
production defaults: only the endpoints differ, and the pacing multiplier follows the
simulator (``--pacing 0`` against one without limits, the default against real ones). Then it
creates N pods at once, waits until every one is Running, holds them, deletes them all at
once, and prints one table (and ``--json``): where the time went, CPU and memory of each
process, Vast calls per minute in steady state, Kubernetes calls per pod, the node's
event-loop stalls, and what the simulator's ledger says about money (leaks, instances per pod).

``--probes`` gives every pod an httpGet readiness and liveness probe, answered for real by
the simulator's listeners on 127.0.0.1 (``sim vast --serve-ports``; 503 for the first
``APP_READY_AFTER`` seconds of each instance, then 200), and adds the time until every pod
is Ready; the hold is then steady probing, and the loop stall measured over it is what
probing costs the node.

``--baseline`` also polls every pod's instance the way the seed did (one ``GET
/api/v0/instances/{id}/`` per pod per ``--baseline-interval``) for a hold's length, so the
ratio of Vast calls and simulator CPU is measured in the same run.

Times are wall-clock on this machine; CPU is read from ``/proc/<pid>/stat``, memory from
``/proc/<pid>/status``. Network traffic stays on 127.0.0.1.
"""

from vk_trio.devtools.bench.cli import add_arguments, main
from vk_trio.devtools.bench.workload import APP_READY_AFTER

__all__ = ["APP_READY_AFTER", "add_arguments", "main"]
