"""The cowpod scheduler: queue, cache, framework and plugins (see README.md).

Talks to the controller only through gRPC (`cowpod.client`, `cowpod.informer`);
imports `cowpod` and nothing from `controller`, `agent` or `hypervisor`.
"""
