"""Pod priority words shared by the controller (PriorityClass, pod defaults) and the
scheduler (preemption): one spelling of each preemption policy."""

from __future__ import annotations

PREEMPT_LOWER = "PreemptLowerPriority"
NEVER = "Never"
PREEMPTION_POLICIES = (PREEMPT_LOWER, NEVER)


def may_preempt(policy: str) -> bool:
    """An empty policy is the default, PreemptLowerPriority (a pod stored before the field)."""
    return policy != NEVER
