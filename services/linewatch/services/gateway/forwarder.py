"""Records from the buffer to Kafka, in order, marked sent only once Kafka acknowledged them; the topics' ids are
checked so a broker that lost its state gets again what it had acknowledged (see `buffer`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from linewatch.core.health import UNKNOWN_TOPIC
from linewatch.core.kafka import aiokafka_security, ensure_topics, kafka_python_security
from linewatch.core.settings import KafkaSettings
from linewatch.core.stats import StatsCounter
from linewatch.services.gateway.buffer import Buffer

log = logging.getLogger(__name__)
# Devices' frames due within a few ms of each other share a batch: fewer produce requests, and fewer batches for
# every consumer's fetch to go through (the dev broker lists them all; `linewatch bench latency` measured it).
LINGER_MS = 5


class Forwarder:
    def __init__(
        self,
        buffer: Buffer,
        kafka: KafkaSettings,
        topics: list[str],
        stats: StatsCounter,
        batch_records: int = 500,
        check_interval_s: float = 30.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        self._buffer = buffer
        self._kafka = kafka
        self._topics = topics
        self._stats = stats
        self._batch = batch_records
        self._check_interval_s = check_interval_s
        self._max_backoff_s = max_backoff_s
        self._producer: AIOKafkaProducer | None = None
        self._topic_ids: dict[str, str] = {}
        self._checked_at = 0.0
        self._down_since: float | None = None
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                sent = await self._send_some()
            except Exception as exc:  # the broker away or failing: everything stays in the buffer
                await self._close_producer()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("kafka unreachable: keeping frames on disk", extra={"error": _describe(exc)})
                self._stats.counters["send_failures"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(self._max_backoff_s, 2 * backoff)
                continue
            backoff = 0.5
            if self._down_since is not None:
                waiting, size = self._buffer.counts()
                log.info(
                    "kafka reachable again: sending the buffer",
                    extra={"away_s": round(time.monotonic() - self._down_since, 1), "records": waiting, "bytes": size},
                )
                self._down_since = None
            if not sent:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.5)
        await self._close_producer()

    async def send_stats(self, topic: str, key: bytes, value: bytes) -> None:
        """Best effort: stats are no plant data and do not go through the buffer."""
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.send(topic, value, key=key)

    async def _send_some(self) -> int:
        if self._producer is None or time.monotonic() - self._checked_at > self._check_interval_s:
            await asyncio.to_thread(self._check_topics)
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._kafka.bootstrap_servers,
                acks="all",
                linger_ms=LINGER_MS,
                request_timeout_ms=10_000,
                max_request_size=4 * 1024 * 1024,
                **aiokafka_security(self._kafka),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        records = self._buffer.pending(self._batch)
        if not records:
            return 0
        futures = [await self._producer.send(r.topic, r.value, key=r.key) for r in records]
        failed = [e for e in await asyncio.gather(*futures, return_exceptions=True) if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        self._buffer.acked(records, self._topic_ids)
        self._stats.counters["records_sent"] += len(records)
        self._stats.counters["values_sent"] += sum(r.values_count for r in records)
        return len(records)

    def _check_topics(self) -> None:
        """The topics' ids now (created when missing); an id that changed means the broker lost the topic."""
        from kafka.admin import KafkaAdminClient

        # A client for each check, closed after it: an idle kafka-python client keeps a network thread polling,
        # which takes the GIL from the event loop reading MQTT (measured: a tenth of the gateway's throughput).
        admin = KafkaAdminClient(
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id="gateway-topics",
            request_timeout_ms=5000,
            **kafka_python_security(self._kafka),
        )
        try:
            described = admin.describe_topics(self._topics)
            if any(t["error_code"] == UNKNOWN_TOPIC for t in described):
                ensure_topics(self._kafka, self._topics, timeout_s=5.0)
                described = admin.describe_topics(self._topics)
        finally:
            admin.close()
        ids = {t["name"]: str(t["topic_id"]) for t in described if t["error_code"] == 0}
        for topic, topic_id in ids.items():
            known = self._buffer.topic_id(topic)
            if known != topic_id:
                again = self._buffer.topic_recreated(topic, topic_id)
                if known is not None:
                    self._stats.counters["records_replayed"] += again
                    log.warning(
                        "the broker lost a topic it had acknowledged records on: sending them again",
                        extra={"topic": topic, "records": again, "topic_id_before": known, "topic_id_now": topic_id},
                    )
        self._topic_ids = ids
        self._checked_at = time.monotonic()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


def _describe(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}"
