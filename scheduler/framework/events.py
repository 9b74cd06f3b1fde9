"""Cluster events: what changed, so the queue retries only pods it can help.

Each plugin lists the events that could make a pod it rejected fit again
(`events()`); when a pod fails, the queue remembers which plugins rejected it,
and an event moves it back only if one of those plugins asked for that event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Resource(enum.StrEnum):
    NODE = "Node"
    POD = "Pod"  # an assigned (bound or assumed) pod
    WILDCARD = "*"


class Action(enum.Flag):
    NONE = 0
    ADD = enum.auto()
    DELETE = enum.auto()
    UPDATE_ALLOCATABLE = enum.auto()
    UPDATE_LABEL = enum.auto()
    UPDATE_TAINT = enum.auto()
    UPDATE_CONDITION = enum.auto()  # Ready, or spec.unschedulable (cordon)
    UPDATE = UPDATE_ALLOCATABLE | UPDATE_LABEL | UPDATE_TAINT | UPDATE_CONDITION
    ALL = ADD | DELETE | UPDATE


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    resource: Resource
    action: Action
    label: str = ""

    def matches(self, happened: ClusterEvent) -> bool:
        """Does this registration cover the event that `happened`?"""
        if self.resource is Resource.WILDCARD:
            return True
        return self.resource == happened.resource and bool(self.action & happened.action)

    def __str__(self) -> str:
        return self.label or f"{self.resource}/{self.action.name}"


NODE_ADD = ClusterEvent(Resource.NODE, Action.ADD)
NODE_ANY = ClusterEvent(Resource.NODE, Action.ALL)
POD_DELETE = ClusterEvent(Resource.POD, Action.DELETE)
ANY = ClusterEvent(Resource.WILDCARD, Action.ALL)
