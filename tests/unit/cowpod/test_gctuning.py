"""The servers' collector thresholds (controller.main and scheduler.main call the helper)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cowpod.gctuning import SERVER_GC_THRESHOLDS, tune_for_server


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_for_server_sets_the_thresholds(restore_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_for_server()
    assert gc.get_threshold() == SERVER_GC_THRESHOLDS
    # A young generation far above the default: bursts of per-event objects do not
    # trigger a collection each.
    assert SERVER_GC_THRESHOLDS[0] >= 10_000

