"""Hypervisor providers and the VM manager.

`provider` defines the `Provider` interface and the VM dataclasses; `docker_provider`,
`sim` (and later `vsphere`) implement it; `fake` is an in-memory provider for unit
tests; `manager` reconciles the controller's VM objects with a provider.

May import `cowpod` (client, informer, clock, errors, generated stubs) only, never
`controller`, `scheduler` or `agent`: it talks to the controller through gRPC.
"""
