"""Distinct types for names and uids, so a pod's uid is never passed where a
node's name is expected (mypy tells them apart; at run time they are `str`)."""

from __future__ import annotations

from typing import NewType

NodeName = NewType("NodeName", str)
PodUID = NewType("PodUID", str)
VMName = NewType("VMName", str)
ClassName = NewType("ClassName", str)
