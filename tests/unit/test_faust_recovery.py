"""linewatch's fixes to faust's table recovery that need no broker (the changelog end count is tested against
one in tests/integration/test_table_recovery.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from faust.types import TP

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app


class SeekingConsumer:
    def __init__(self) -> None:
        self.sought: dict[Any, int] = {}

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        self.sought.update(offsets)


async def test_a_partition_a_rebalance_re_added_mid_recovery_is_sought_from_the_start() -> None:
    # on_rebalance re-adds a partition with offset None; the running round then seeks it (aiokafka refused None
    # and the worker crashed).
    app = faust_app("unit-recovery", KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    known, re_added = TP("unit-recovery-changelog", 0), TP("unit-recovery-changelog", 1)
    offsets: Counter[TP] = Counter({known: 41})
    offsets.setdefault(re_added, None)  # type: ignore[arg-type]
    consumer = SeekingConsumer()

    await app.tables.recovery._seek_offsets(consumer, {known, re_added}, offsets, "standby")

    assert consumer.sought == {known: 41, re_added: 0}
