"""Where the autoscaler's leader lease lives. The autoscaler elects with it and
`cowpod down` takes it to stand the autoscaler down, so both read it here."""

from __future__ import annotations

SYSTEM_NAMESPACE = "cowpod-system"
AUTOSCALER_LEASE_NAME = "cowpod-autoscaler"
