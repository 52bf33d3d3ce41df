"""The consumer's drain loop (`linewatch.core.faust_fixes._deliver_at_once`), on real faust objects with no
broker: a record nothing would hold up goes straight onto its channel's queue; one that might wait (a rebalance
rebuilding the conductor's index, a full queue) goes faust's way, through the conductor; a record read before is
dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app

TOPIC = "deliver-at-once-input"


class Drain:
    """A faust app's consumer draining `offsets` of partition 0 of a raw topic with one agent's channel."""

    def __init__(self, offsets: list[int], queue_size: int = 100) -> None:
        from faust.types import TP

        self.app = app = faust_app("deliver-at-once-test", KafkaSettings(bootstrap_servers="127.0.0.1:9"))
        app.flow_control.resume()  # as after a rebalance
        self.tp = TP(TOPIC, 0)
        self.channel = app.topic(TOPIC)
        self.channel.maxsize = queue_size  # before its queue is made
        app.topics._tp_to_callback[self.tp] = app.topics._build_handler(self.tp, {self.channel})
        self.consumer = app.consumer
        self.through_conductor: list[int] = []
        self.offsets = offsets

    async def run(self) -> None:
        from faust.types.tuples import ConsumerMessage
        from mode.utils.locks import Event

        fetcher: Any = type("Fetcher", (), {"_stopped": Event()})()

        async def conductor(message: Any) -> None:  # faust's way, recorded
            self.through_conductor.append(message.offset)

        async def getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
            for offset in self.offsets:
                message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v%d" % offset, None, tp=self.tp)
                yield self.tp, message
            fetcher._stopped.set()

        self.consumer.callback = conductor
        self.consumer.getmany = getmany
        await asyncio.wait_for(self.consumer._drain_messages(fetcher), 5)

    def queued(self) -> list[tuple[int, bytes, int]]:
        queue = self.channel.queue
        events = [queue.get_nowait() for _ in range(queue.qsize())]
        return [(event.message.offset, event.value, event.message.refcount) for event in events]


def test_records_go_straight_onto_their_channels_queue() -> None:
    drain = Drain([0, 1, 2])
    asyncio.run(drain.run())
    assert drain.queued() == [(0, b"v0", 1), (1, b"v1", 1), (2, b"v2", 1)]
    assert drain.through_conductor == []


def test_while_a_rebalance_rebuilds_the_index_records_go_through_the_conductor() -> None:
    drain = Drain([0, 1])

    async def main() -> None:
        async with drain.app.topics._tp_to_callback_lock:
            await drain.run()

    asyncio.run(main())
    assert drain.through_conductor == [0, 1]
    assert drain.queued() == []


def test_a_record_meeting_a_full_queue_goes_through_the_conductor() -> None:
    drain = Drain([0, 1, 2], queue_size=2)
    asyncio.run(drain.run())
    assert [offset for offset, _, _ in drain.queued()] == [0, 1]
    assert drain.through_conductor == [2]


def test_a_record_read_before_is_dropped() -> None:
    drain = Drain([5, 6, 3, 7])
    asyncio.run(drain.run())
    assert [offset for offset, _, _ in drain.queued()] == [5, 6, 7]
    assert drain.through_conductor == []
