# The qemu provider's guest filesystem, before deploy/qemu/build-image.sh turns
# it into a disk: the VM image's Debian base + a Docker engine for the pods +
# cowpod's venv, unchanged, from cowpod/vm:latest. No systemd: the kernel runs
# /sbin/cowpod-init (hypervisor/providers/qemu/guestinit.py) as PID 1, which
# starts dockerd itself.
# Layers in order of how often they change: the engine (only when vm-base is
# rebuilt), then cowpod's venv (every source change, seconds).
FROM cowpod/vm-base:bookworm

# --no-install-recommends: no apparmor, git, xz, cgroupfs-mount; kmod for the
# modprobe that dockerd, iptables and the init call (the kernel's modules are
# added by build-image.sh, outside Docker).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io containerd runc iptables kmod \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \
      /usr/sbin/policy-rc.d /etc/systemd /lib/systemd/system /etc/init.d \
 && : >/etc/machine-id

COPY --from=cowpod/vm:latest /opt/cowpod /opt/cowpod
# What a guest never runs (the disk is made from the flattened export, so this
# shrinks it): the docker CLI (the init loads images through the API), debug and
# legacy-shim binaries, overlay-network routing; pip, and numpy (the scheduler's,
# not the agent's).
RUN rm -f /usr/bin/docker /usr/bin/ctr /usr/bin/dnet /usr/sbin/ovrouter \
      /usr/bin/containerd-shim /usr/bin/containerd-shim-runc-v1 \
 && cd /opt/cowpod/venv/lib/python3.11/site-packages && rm -rf numpy numpy.libs numpy-* pip pip-*
COPY cowpod-init /sbin/cowpod-init
RUN mkdir -p /run/cowpod /var/lib/cowpod/images /var/log/cowpod /etc/docker
COPY daemon.json /etc/docker/daemon.json
