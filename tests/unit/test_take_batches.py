"""How every agent takes its stream (`linewatch.core.streams.take_batches`): batches closed by size or time, each
record tracked until the agent's turn on its batch returns, records of an earlier assignment acknowledged
unprocessed, and a stopping channel ending the iteration."""

from __future__ import annotations

import asyncio
from typing import Any

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app, take_batches

TOPIC = "take-batches-input"


def stream_and_events(count: int, stale: frozenset[int] = frozenset()) -> tuple[Any, list[Any]]:
    """A stream over a faust topic whose queue holds `count` events, those at `stale` from an earlier generation."""
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    app = faust_app("take-batches-test", KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    app.flow_control.resume()  # as after a rebalance: the consumer's flow is on
    app.topics.acking_topics.add(TOPIC)  # what the conductor records when the agent subscribes
    stream = app.stream(app.topic(TOPIC))
    events = []
    for offset in range(count):
        generation = app.consumer_generation_id - 1 if offset in stale else app.consumer_generation_id
        message = ConsumerMessage(
            TOPIC, 0, offset, 0.0, 0, [], b"k", b"v%d" % offset, None, tp=TP(TOPIC, 0), generation_id=generation
        )
        message.incref()  # one channel delivered to, as the conductor counts it
        event = app.conf.Event(app, message.key, message.value, message.headers, message)
        stream.channel.queue.put_nowait(event)
        events.append(event)
    return stream, events


def test_batches_close_at_their_size_then_when_nothing_more_comes_in_time() -> None:
    stream, events = stream_and_events(5)

    async def take() -> list[list[int]]:
        batches = []
        async for batch in take_batches(stream, 3, 0.01):
            batches.append([event.message.offset for event in batch])
            if sum(map(len, batches)) == len(events):
                break
        return batches

    assert asyncio.run(take()) == [[0, 1, 2], [3, 4]]


def test_a_batch_is_acknowledged_only_once_the_agents_turn_on_it_returns() -> None:
    stream, events = stream_and_events(4)
    unacked = stream.app.consumer.unacked

    async def take() -> list[tuple[list[bool], int, Any]]:
        seen = []
        async for batch in take_batches(stream, 2, 0.01):
            # During the turn: tracked (the commit waits for them), not acknowledged, the last one current.
            seen.append(
                ([e.message.acked for e in batch], sum(e.message in unacked for e in batch), stream.current_event)
            )
            if len(seen) == 2:
                break
        return seen

    seen = asyncio.run(take())
    assert seen == [([False, False], 2, events[1]), ([False, False], 2, events[3])]
    # The first batch was acknowledged when the agent asked for the next; the second when it left the loop.
    assert all(event.message.acked for event in events)
    assert not unacked
    assert stream.current_event is None


def test_records_of_an_earlier_assignment_are_acknowledged_not_handed_on() -> None:
    stream, events = stream_and_events(4, stale=frozenset({1, 2}))

    async def take() -> list[int]:
        async for batch in take_batches(stream, 10, 0.01):
            return [event.message.offset for event in batch]
        return []

    assert asyncio.run(take()) == [0, 3]
    assert events[1].message.acked and events[2].message.acked


def test_a_stopping_channel_ends_the_iteration_without_an_error() -> None:
    stream, _ = stream_and_events(0)

    async def take() -> int:
        stream.channel.queue._throw(StopAsyncIteration())  # faust's stop of an agent's channel
        return sum([len(batch) async for batch in take_batches(stream, 10, 0.01)])

    assert asyncio.run(asyncio.wait_for(take(), 5)) == 0
