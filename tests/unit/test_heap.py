"""What a worker keeps for life is out of the collector's full walks (their pauses held frames 70-195 ms)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from linewatch.core.heap import collector_paused, freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the session collects as before


def walked(thing: object) -> bool:
    return any(candidate is thing for candidate in gc.get_objects())


def test_what_startup_built_is_frozen_and_what_comes_after_is_still_collected(unfrozen: None) -> None:
    built_at_startup = {"model": [[0.5] * 3 for _ in range(10)]}
    assert walked(built_at_startup)
    freeze_startup_heap()
    assert not walked(built_at_startup) and gc.get_freeze_count() > 0
    per_record = {"frame": [1.0, 2.0]}
    assert walked(per_record)


def test_an_instrument_timing_has_no_collection_of_its_own_and_collects_again_after(unfrozen: None) -> None:
    built_before = {"frames": [[0.5] * 3 for _ in range(10)]}
    with collector_paused():
        assert not gc.isenabled() and not walked(built_before)
    assert gc.isenabled() and walked(built_before)
