"""The chaos soak: the whole product, abused, then audited from the outside (issue 4).

Why: unit and integration tests check one story at a time. What costs money in production is
the interleavings nobody wrote down: a SIGKILL between a create call and its answer, a pod
force-deleted while no node process runs, a lost create response during a 5xx storm. A soak
runs many such stories at once and then checks the few properties that must hold whatever
happened, from records the node cannot tamper with: the Vast simulator's ledger (every
instance ever created, with create/destroy times and labels) and the Kubernetes API.

How (``python -m tests.chaos --pods 30 --duration 60 --kills 3 --json report.json``):

1. both simulators and ``vk-trio run`` start as separate processes (``processes``), on a
   market with enough offers for every pod (``market``), with short timings so that the node
   converges in seconds, and with faults injected by the Vast simulator (``plan``);
2. for ``--duration`` seconds the workload driver (``workload``) keeps about ``--pods`` GPU
   pods live, deleting and creating them at random, while the node is SIGKILLed ``--kills``
   times at seeded random moments and restarted (all state lives in the simulators);
3. faults are then switched off and the node gets a bounded settle period to converge;
4. the audit (``audit``, a pure function of the ledger and the API's pods) counts violations
   of the invariants, and ``report`` prints one table (and ``--json``). The exit status is
   non-zero when any invariant is violated. Logs, the ledger and the final pods are kept in
   the run directory as evidence.

With ``--agent`` the Vast simulator runs every instance's process in a sandbox, half the pods
run under the vk-trio agent their instance downloads (volumes, Secret env), the node links to
it, and the audit adds two invariants: no Secret value in any create request, and no agent
process started twice on its instance (a restarted node reconnects instead).

A harness, not product code: nothing in the product imports this package
(an import-linter contract checks it); it uses the simulators and the product's label format.
"""
