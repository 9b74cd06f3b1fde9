"""The node agent: runs in each VM (or on a Docker host), registers the node,
watches the pods bound to it and drives Docker to run them.

It is a reconciler (see README.md): `plan.plan_pod` compares a desired pod
with the containers Docker reports and returns actions; `executor` carries
them out through a `runtime.Runtime`. It talks to the controller only through
gRPC (`cowpod.client.Client`, `cowpod.informer.Informer`) and may import
`cowpod` but none of `controller`, `scheduler` or `hypervisor`.
"""
