"""The API's shared vocabulary: the words every cowpod process must agree on.

One definition each, imported by the controller, scheduler, agent, autoscaler,
hypervisor and CLI alike, so two copies can never drift apart:

    phases.py       PodPhase, VMPhase (str enums: stored values are the strings),
                    the terminal-phase rule
    labels.py       well-known node labels, annotations and taints
    ids.py          NewTypes for names and uids (NodeName, PodUID, VMName, ClassName)
    resources.py    Resources and the one "what a pod reserves" rule
    tolerations.py  Kubernetes' ToleratesTaint, over protos and plain values alike
    quantity.py     Kubernetes quantities ("500m", "64Mi", "1e3") to integers and back
    validation.py   the pure validation rules (name and label patterns, field errors)

Layer rule (held by tests/unit/test_import_contract.py): modules here import the
standard library, protobuf and `cowpod.v1` only. This `__init__` imports nothing,
so a stdlib-only consumer (the QEMU guest's init reads `labels`) can import a
submodule without pulling in protobuf.
"""
