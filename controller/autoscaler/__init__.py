"""The autoscaler: adds VMs when pods cannot be placed, removes clones that sit empty.

A reconciler in four parts (see README.md for the picture):

- `observe` turns API objects into the frozen views of `model`;
- `memory` remembers what the objects cannot tell (how long a node has been
  empty, recent clone failures and their back-off);
- `plan` is the pure decision `plan(snapshot, config, memory, now, fits) -> [Action]`,
  asking the scheduler's own filter code (`fit`) whether a pod fits a fresh VM;
- `executor` turns actions into VMService/NodeService/PodService/EventService calls;
- `reconciler` owns the informers and the loop, one task group per process,
  behind a lease (`leader`) when two controllers run.

It runs inside the controller process (`cowpod-controller --autoscale`) but talks
to the controller only through the gRPC API, like any other client. It may import
`cowpod` and, for the fit check only, `scheduler.simulate`.
"""
