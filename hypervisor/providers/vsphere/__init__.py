"""The vsphere provider: cowpod VMs are vSphere VMs, made with pyVmomi.

    settings.py   the cluster config's `provider:` section, checked with field paths
    client.py     one vCenter session: login, re-login, task waits (WaitForUpdatesEx),
                  retries with back-off, every call on a bounded thread pool
    provider.py   the `Provider`: CloneVM_Task / InstantClone_Task / ... (docs/vsphere.md)
    plugin.py     `PLUGIN`, the registry's entry: parse, preflight check, create
    guestinit.py  runs in the guest: reads guestinfo.cowpod.bootstrap, starts the VM init

This file and guestinit.py import the standard library only: the guest runs
`python -m hypervisor.providers.vsphere.guestinit` without pyVmomi.
"""
