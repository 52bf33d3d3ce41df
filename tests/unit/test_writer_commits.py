"""The writer's commits: only offsets InfluxDB acknowledged, in offset order, at most every `commit_interval_s`,
and whatever was written is committed when the sink idles or drains (before partitions change hands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from linewatch.core.stats import StatsCounter
from linewatch.services.writer.sink import InfluxSink

TOPIC = "linewatch.scores"
TP = TopicPartition(TOPIC, 0)


class Consumer:
    """Hands out the batches it was given, then nothing (as an idle topic does), and notes each commit."""

    def __init__(self, batches: int) -> None:
        self.batches = deque(
            {TP: [SimpleNamespace(topic=TOPIC, partition=0, offset=n, key=b"u", value=b"line %d" % n)]}
            for n in range(batches)
        )
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.batches:
            await asyncio.sleep(0)
            return self.batches.popleft()
        await asyncio.sleep(0.01)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class Influx:
    """Acknowledges every write, except that from `hang_on` on it never answers (InfluxDB stalled)."""

    retries = 0

    def __init__(self, hang_on: bytes | None = None) -> None:
        self.bodies: list[bytes] = []
        self.hang_on = hang_on

    async def write(self, body: bytes) -> None:
        if body == self.hang_on:
            await asyncio.Event().wait()
        self.bodies.append(body)


def sink_on(consumer: Consumer, influx: Influx, commit_interval_s: float) -> InfluxSink:
    return InfluxSink(
        consumer,
        SimpleNamespace(),  # no dead letters here
        influx,  # type: ignore[arg-type]
        {TOPIC: lambda value: [value]},
        "linewatch.deadletter",
        StatsCounter("writer"),
        max_poll_records=400,
        max_in_flight=3,
        commit_interval_s=commit_interval_s,
    )


def run_sink(batches: int, commit_interval_s: float, influx: Influx, seconds: float = 0.3) -> Consumer:
    """The sink on `batches` batches, then idle, for `seconds`; the commits are those made before it stops."""

    async def main() -> Consumer:
        consumer = Consumer(batches)
        running = asyncio.create_task(sink_on(consumer, influx, commit_interval_s).run(asyncio.Event()))
        await asyncio.sleep(seconds)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return consumer

    return asyncio.run(main())


def test_within_the_interval_the_batches_are_committed_once_with_the_newest_offset_when_the_sink_idles() -> None:
    influx = Influx()
    consumer = run_sink(10, commit_interval_s=60.0, influx=influx)
    assert len(influx.bodies) == 10
    assert consumer.commits == [{TP: 10}]


def test_with_no_interval_every_batch_is_committed_in_offset_order() -> None:
    consumer = run_sink(5, commit_interval_s=0.0, influx=Influx())
    assert consumer.commits == [{TP: n} for n in range(1, 6)]


def test_nothing_past_a_write_influxdb_has_not_acknowledged_is_committed() -> None:
    influx = Influx(hang_on=b"line 1")
    consumer = run_sink(4, commit_interval_s=0.0, influx=influx)
    # Batches 2 and 3 were acknowledged, but after the one still waiting: their offsets would skip it.
    assert influx.bodies == [b"line 0", b"line 2", b"line 3"]
    assert consumer.commits == [{TP: 1}]
