"""Where the leader leases live. The autoscaler elects with its lease and
`cowpod down` takes it to stand the autoscaler down, so both read it here."""

from __future__ import annotations

SYSTEM_NAMESPACE = "cowpod-system"
AUTOSCALER_LEASE_NAME = "cowpod-autoscaler"
# The scheduler's certificate may take this lease and no other (controller/auth/authorizer.py).
SCHEDULER_LEASE_NAME = "cowpod-scheduler"
