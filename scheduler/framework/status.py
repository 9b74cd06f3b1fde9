"""`Status`: what a plugin answers, and what the answer means for the queue.

- SUCCESS: go on.
- UNSCHEDULABLE: this node does not fit now; a cluster change (a pod leaving,
  a node growing) may fix it.
- UNSCHEDULABLE_AND_UNRESOLVABLE: this node will not fit whatever happens to
  the pods on it (wrong labels, taint); only a change to the node can help.
- ERROR: something broke (a bug, a failed RPC); retry after back-off without
  waiting for a cluster event.

Reasons are short, user-facing phrases ("Insufficient memory"); the
unschedulable message counts them over nodes, Kubernetes style.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.IntEnum):
    SUCCESS = 0
    UNSCHEDULABLE = 1
    UNSCHEDULABLE_AND_UNRESOLVABLE = 2
    ERROR = 3


@dataclass(frozen=True, slots=True)
class Status:
    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def ok(self) -> bool:
        return self.code == Code.SUCCESS

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def with_plugin(self, plugin: str) -> Status:
        return Status(self.code, self.reasons, plugin)

    @staticmethod
    def unschedulable(*reasons: str, plugin: str = "") -> Status:
        return Status(Code.UNSCHEDULABLE, reasons, plugin)

    @staticmethod
    def unresolvable(*reasons: str, plugin: str = "") -> Status:
        return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, plugin)

    @staticmethod
    def error(reason: str, plugin: str = "") -> Status:
        return Status(Code.ERROR, (reason,), plugin)


SUCCESS = Status()
