# The cowpod VM template: Debian bookworm minbase (cowpod/vm-base, built by
# deploy/build-images.sh with debootstrap) + a venv with cowpod in it.
# Layers in order of how often they change: the runtime settings never, the
# deps layer when pyproject's dependencies change, the source layer on every
# source change (seconds).
FROM cowpod/vm-base:bookworm

ENV PATH=/opt/cowpod/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# The VM's init (PID 1, hypervisor/vminit.py): writes the VM identity, starts
# cowpod-agent from COWPOD_AGENT_ARGV, restarts it if it dies, reaps zombies,
# and on SIGTERM (docker stop) stops the agent and exits 0.
STOPSIGNAL SIGTERM
CMD ["/opt/cowpod/venv/bin/python", "-m", "hypervisor.vminit"]

# Deps from wheels downloaded on the host (no network here).
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/cowpod/venv \
 && /opt/cowpod/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels \
      --disable-pip-version-check -r /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels /root/.cache \
 && mkdir -p /run/cowpod /var/lib/cowpod

# cowpod itself.
COPY src/ /tmp/cowpod-src/
RUN /opt/cowpod/venv/bin/pip install --quiet --no-deps --no-index --no-build-isolation \
      --disable-pip-version-check /tmp/cowpod-src \
 && rm -rf /tmp/cowpod-src /root/.cache
