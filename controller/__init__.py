"""The cowpod controller: the gRPC API server and the only process that touches etcd.

See controller/README.md for the request flow and the words used. May import
`cowpod` (client, errors, clock, generated stubs) and `aetcd`; never `scheduler`,
`agent` or `hypervisor` (the VM manager is imported lazily, only with --provider).
"""
