"""Queue sort: higher `spec.priority` first, then older pods first."""

from __future__ import annotations

from scheduler.framework.interfaces import QueueSortPlugin
from scheduler.framework.queue import QueuedPod


class PrioritySort(QueueSortPlugin):
    name = "PrioritySort"

    def sort_key(self, qp: QueuedPod) -> tuple[float, ...]:
        return (-qp.pod.priority, qp.pod.created or qp.enqueued)
