"""The Docker labels the agent writes on every container and volume it makes.

They are the agent's durable memory: after a restart (even SIGKILL) it
rebuilds which pod a container belongs to, which attempt it is and how far
its crash back-off had grown from these labels alone.
"""

from __future__ import annotations

from typing import Final

MANAGED: Final = "cowpod.managed"
NODE: Final = "cowpod.node"
POD_UID: Final = "cowpod.pod.uid"
POD_NAME: Final = "cowpod.pod.name"
POD_NAMESPACE: Final = "cowpod.pod.namespace"
CONTAINER_NAME: Final = "cowpod.container.name"
# sandbox | init | app
CONTAINER_KIND: Final = "cowpod.container.kind"
# How many instances of this container ran before this one: restartCount.
ATTEMPT: Final = "cowpod.container.attempt"
# Consecutive crash restarts leading to this instance; sets its back-off.
BACKOFF_STREAK: Final = "cowpod.container.backoff-streak"
# Hash of the container's spec; a changed spec replaces the container.
SPEC_HASH: Final = "cowpod.container.hash"
# The grace period the pod asked for, so an orphan is stopped as gently.
GRACE: Final = "cowpod.pod.grace-seconds"
VOLUME_NAME: Final = "cowpod.volume.name"
TEST: Final = "cowpod.test"

SANDBOX_NAME: Final = "POD"
