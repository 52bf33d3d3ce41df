"""Kafka -> InfluxDB with at-least-once delivery and idempotent points.

Batches are fetched and turned into line protocol while earlier ones are being written (a few POSTs in
flight keep influxd busy on every core); a batch's offsets are committed only after InfluxDB acknowledged
it and every batch before it, at most every `commit_interval_s` (a commit a batch was a tenth of the dev
broker's requests at live load) and whenever the sink idles, drains or stops. Rewrites after a crash hit the same
series and timestamps, so they overwrite instead of duplicating.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from linewatch.core.contract import SourcePosition, dead_letter, encoder
from linewatch.core.kafka import source_of
from linewatch.core.stats import StatsCounter
from linewatch.storage.influx import InfluxRejected, InfluxWriter
from linewatch.storage.lineprotocol import TimestampCache, telemetry_lines

SERVICE = "writer"
log = logging.getLogger(__name__)

LineFormatter = Callable[[bytes], list[bytes]]


def telemetry_formatter() -> LineFormatter:
    timestamps = TimestampCache()
    return lambda value: telemetry_lines(value, timestamps)


@dataclass
class RecordLines:
    source: SourcePosition
    value: bytes
    lines: list[bytes]


@dataclass
class Batch:
    records: list[RecordLines] = field(default_factory=list)
    rejected: list[tuple[RecordLines, str, str]] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(len(r.lines) for r in self.records)


class InfluxSink:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        influx: InfluxWriter,
        formatters: dict[str, LineFormatter],
        deadletter_topic: str,
        stats: StatsCounter,
        max_poll_records: int,
        max_in_flight: int = 3,
        commit_interval_s: float = 0.5,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._influx = influx
        self._formatters = formatters
        self._deadletter_topic = deadletter_topic
        self._stats = stats
        self._max_poll_records = max_poll_records
        self._max_in_flight = max_in_flight
        self._in_flight: deque[asyncio.Task[None]] = deque()
        self._commit_interval_s = commit_interval_s
        self._written: dict[TopicPartition, int] = {}  # next offsets written (and dead-lettered) but not committed
        self._committed_at = time.monotonic()
        # A drain on revoke must not return while the idle loop's commit is still on its way.
        self._committing = asyncio.Lock()

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        sink = self

        class FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                await sink.drain()

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                log.info("partitions assigned", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in assigned]})

        return FlushOnRevoke()

    async def drain(self) -> None:
        """Wait until every batch in flight is written and committed (before partitions change hands)."""
        while self._in_flight:
            await self._in_flight.popleft()
        await self._commit()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self._max_poll_records)
            if not fetched:
                if self._written:
                    await self.drain()
                continue
            batch = self._prepare(fetched)
            while len(self._in_flight) >= self._max_in_flight:
                await self._in_flight.popleft()
            previous = self._in_flight[-1] if self._in_flight else None
            self._in_flight.append(asyncio.create_task(self._write_and_commit(batch, previous)))
        await self.drain()

    def _prepare(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> Batch:
        batch = Batch()
        for tp, messages in fetched.items():
            formatter = self._formatters[tp.topic]
            for message in messages:
                value: bytes = message.value or b""
                record = RecordLines(source_of(message), value, [])
                try:
                    record.lines = formatter(value)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    batch.rejected.append((record, "invalid_frame", str(exc)))
                else:
                    batch.records.append(record)
            self._stats.took(tp.topic, len(messages))
            batch.next_offsets[tp] = messages[-1].offset + 1
        return batch

    async def _write_and_commit(self, batch: Batch, previous: asyncio.Task[None] | None) -> None:
        if batch.records:
            body = b"\n".join(line for record in batch.records for line in record.lines)
            try:
                await self._influx.write(body)
            except InfluxRejected as exc:
                log.warning("batch rejected, writing record by record", extra={"error": exc.message})
                await self._write_one_by_one(batch)
            self._stats.counters["points_written"] += batch.points
            for record in batch.records:
                self._stats.counters[f"points_written.{record.source.topic}"] += len(record.lines)
        if previous is not None:
            await previous  # commits stay in offset order
        for record, reason, detail in batch.rejected:
            letter = dead_letter(
                stage=SERVICE, reason=reason, detail=detail, source=record.source, source_bytes=record.value
            )
            await self._producer.send_and_wait(
                self._deadletter_topic, encoder.encode(letter), key=(record.source.key or "").encode() or None
            )
            self._stats.counters["dead_letters"] += 1
        self._written |= batch.next_offsets
        if time.monotonic() - self._committed_at >= self._commit_interval_s:
            await self._commit()
        self._stats.counters["write_retries"] = self._influx.retries

    async def _commit(self) -> None:
        async with self._committing:
            offsets, self._written = self._written, {}
            self._committed_at = time.monotonic()
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The partitions moved on; whoever owns them now rewrites the batches (idempotent points).
                log.warning("commit failed, batches will be written again", extra={"error": str(exc)})

    async def _write_one_by_one(self, batch: Batch) -> None:
        kept: list[RecordLines] = []
        for record in batch.records:
            try:
                await self._influx.write(b"\n".join(record.lines))
                kept.append(record)
            except InfluxRejected as exc:
                batch.rejected.append((record, "influx_rejected", exc.message))
        batch.records = kept
