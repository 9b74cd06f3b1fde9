"""The project's own container images, and the rule that pods never run them.

A VM image, a VM's snapshot (`docker commit` of a running VM) or a snapped-free
VM's own image is a VM's disk: cowpod's code, and — for a snapshot taken from
an older cowpod or by hand — possibly a node's private key. A pod running one
reads that disk as its root filesystem, so pods may not name them (checked at
admission by name, `INVALID_ARGUMENT`) and the agent refuses a container whose
image carries one of the internal labels (which catches an image named by its
id or retagged under an innocent name).

The names live here, once: the docker provider's defaults, `cowpod up` and the
admission rule read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VM_IMAGE = "cowpod/vm:latest"
# The pod sandbox (holds a pod's namespaces); also the agent's host-path probe.
PAUSE_IMAGE = "cowpod/pause:latest"
SNAPSHOT_REPO = "cowpod/vm-snap"
OWN_REPO = "cowpod/vm-own"
# Repositories of images that are VM disks or their build stages (deploy/build-images.sh,
# deploy/qemu/build-image.sh); never a pod's image.
INTERNAL_REPOS = ("cowpod/vm", "cowpod/vm-base", "cowpod/venv", SNAPSHOT_REPO, OWN_REPO, "cowpod/qemu-guest")

# Labels on VM containers and on the images committed from them (a commit keeps
# the container's labels), and the docker provider's image labels.
VM_LABEL = "cowpod.vm"
SNAPSHOT_OF_LABEL = "cowpod.snapshot-of"
OWN_OF_LABEL = "cowpod.own-of"
# Set on the VM template image by deploy/build-images.sh.
INTERNAL_LABEL = "cowpod.internal"
INTERNAL_LABELS = (VM_LABEL, SNAPSHOT_OF_LABEL, OWN_OF_LABEL, INTERNAL_LABEL)

_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
_REGISTRY_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def repository(ref: str) -> str:
    """`ref`'s repository as Docker resolves it locally: no digest, no tag, no
    Docker Hub prefix (`docker.io/library/x:1` → `x`), lowercase."""
    name = ref.strip().split("@", 1)[0].lower()
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name.rpartition(":")[0]
    for prefix in _REGISTRY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("library/"):
        name = name[len("library/"):]
    return name


def internal_image_violation(ref: str) -> str | None:
    """Why a pod may not run image `ref`, or None."""
    if _IMAGE_ID.match(ref.strip().lower()):
        return "images are named by repository and tag, not by image id"
    repo = repository(ref)
    if repo in INTERNAL_REPOS:
        return f"{repo} is one of cowpod's internal images (VM disks and snapshots), which pods may not run"
    return None


def internal_labels_violation(labels: Mapping[str, str] | None) -> str | None:
    """Why an image with these labels (Docker's `Config.Labels`) is internal, or None."""
    for key in INTERNAL_LABELS:
        if labels and key in labels:
            return (f"the image carries the label {key!r}: it is a cowpod VM disk or snapshot, "
                    "which pods may not run")
    return None
