"""The qemu provider: real Linux guests, one QEMU process each; instant clones share the parent's RAM.

    plugin.py    registry entry: settings, preflight (qemu, image, memory, KVM or TCG), factory
    provider.py  the Provider: full clone, quiesce, instant clone, snap free, destroy
    machine.py   one QEMU process: its command line, sockets, start
    qmp.py       QMP commands and events (qemu.qmp), migrations to and from a state file
    channel.py   the host end of the guest channel (virtio-serial org.cowpod.guest)
    store.py     vm.json records and snapshots on disk: the truth after a restart
    disks.py     qcow2 overlays
    accel.py     the KVM probe
    guestinit.py the guest's PID 1 (guest side; standard library only)
    tinyguest.py a busybox guest for tests and benches; testing.py their helpers

The host side imports qemu.qmp; the guest side (guestinit.py) imports only the
standard library and hypervisor.guest.
"""
