"""faust's commit never passes a record that was neither acknowledged nor shown not to exist
(`linewatch.core.faust_fixes._patch_faust_seek_race`, point 3)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP as TopicPartition
from intervaltree import IntervalTree  # type: ignore[import-untyped]  # faust's, no stubs

from linewatch.core.faust_fixes import learn_head
from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app

TP = TopicPartition("linewatch.telemetry.valid", 4)


def consumer(committed: int | None, acked: list[int]) -> Any:
    faust_app("unit-commit-head", KafkaSettings(bootstrap_servers="127.0.0.1:9"))  # applies linewatch's faust fixes
    state = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _read_offset=defaultdict(lambda: None),
        linewatch_heads={} if committed is None else {TP: committed},  # as the seek leaves them
    )
    state._committed_offset[TP] = committed
    state._acked[TP].extend(acked)
    state._acked_index[TP].update(acked)
    return state


def new_offset(state: Any) -> int | None:
    result: int | None = Consumer._new_offset(state, TP)
    return result


def test_a_commit_waits_for_the_one_record_missing_at_the_committed_offset() -> None:
    state = consumer(committed=31, acked=[32, 33])  # 31 was fetched and never acknowledged
    assert new_offset(state) is None  # faust's own check, one short, committed 34
    state._acked[TP].insert(0, 31)
    assert new_offset(state) == 34


def test_with_nothing_committed_a_commit_waits_for_the_first_record_fetched() -> None:
    state = consumer(committed=None, acked=[5, 6])
    learn_head(state, TP, 0)  # reading started at the log's first record, 0
    assert new_offset(state) is None  # faust skipped its check with nothing committed, and committed 7
    state._acked[TP][:0] = [0, 1, 2, 3, 4]
    assert new_offset(state) == 7


def test_a_commit_that_did_not_land_does_not_hold_the_next() -> None:
    state = consumer(committed=None, acked=[0, 1, 2, 3, 4])
    learn_head(state, TP, 0)
    assert new_offset(state) == 5  # faust drops 0-4 from its acknowledgements here; say the commit then failed
    state._acked[TP].extend([5, 6])
    assert new_offset(state) == 7  # seen in the scale-out test: held on 0 while 0-4 were done


def test_records_the_broker_shows_do_not_exist_are_committed_past() -> None:
    state = consumer(committed=31, acked=[33, 34])
    learn_head(state, TP, 33)  # asked for 31, the broker answered with 33 first: 31 and 32 do not exist
    assert new_offset(state) == 35


def test_a_partition_read_in_order_commits_as_before() -> None:
    state = consumer(committed=31, acked=[31, 32, 33, 36])
    assert new_offset(state) == 34
