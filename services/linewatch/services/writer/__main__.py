"""`linewatch service writer` (`python -m linewatch.services.writer`): valid telemetry and events into InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from linewatch.core import logs
from linewatch.core.commandline import exit_with
from linewatch.core.health import beat, start_watch
from linewatch.core.heap import freeze_startup_heap
from linewatch.core.kafka import aiokafka_security, ensure_topics
from linewatch.core.stats import StatsCounter
from linewatch.core.stopping import begin_stop, stop_on_signals
from linewatch.services.writer.settings import WriterSettings
from linewatch.services.writer.sink import SERVICE, InfluxSink, telemetry_formatter
from linewatch.storage.influx import InfluxWriter
from linewatch.storage.lineprotocol import alarm_lines, lot_lines, score_lines, stats_lines


async def publish_stats(
    producer: AIOKafkaProducer, topic: str, stats: StatsCounter, interval_s: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        with contextlib.suppress(Exception):
            await producer.send(topic, stats.snapshot(), key=SERVICE.encode())


async def run(settings: WriterSettings, topic_ids: dict[str, str]) -> None:
    kafka = settings.kafka
    stop = asyncio.Event()
    stop_on_signals(stop, settings.stop_within_s)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group(SERVICE),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        session_timeout_ms=int(kafka.session_timeout_s * 1000),
        heartbeat_interval_ms=int(kafka.session_timeout_s * 250),
        **aiokafka_security(kafka),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5, **aiokafka_security(kafka)
    )
    influx = InfluxWriter(settings.influx, max_backoff_s=settings.max_backoff_s)
    stats = StatsCounter(SERVICE)
    formatters = {
        kafka.topics.valid: telemetry_formatter(),
        kafka.topics.scores: score_lines,
        kafka.topics.alarms: alarm_lines,
        kafka.topics.lots: lot_lines,
        kafka.topics.stats: stats_lines,
    }
    sink = InfluxSink(
        consumer,
        producer,
        influx,
        formatters,
        kafka.topics.deadletter,
        stats,
        settings.max_poll_records,
        settings.max_in_flight,
        settings.commit_interval_s,
    )
    consumer.subscribe(list(formatters), listener=sink.rebalance_listener())
    await producer.start()
    await consumer.start()
    reporter = asyncio.create_task(publish_stats(producer, kafka.topics.stats, stats, settings.stats_interval_s, stop))
    watch = start_watch(SERVICE, settings, stats, topic_ids)
    beating = asyncio.create_task(beat(watch.state))
    freeze_startup_heap()
    try:
        await sink.run(stop)
    finally:
        begin_stop(stop, settings.stop_within_s)  # already begun unless the sink failed: that stop is bounded too
        watch.stop()
        beating.cancel()
        await reporter
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # aiokafka 0.14's Fetcher.close awaits the fetches it cancelled: one waiting out its retry backoff (the
            # broker gone) raises its cancellation here. The consumer is closed; only a cancellation of ours goes on.
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        await producer.stop()
        await influx.close()


def main() -> None:
    settings = WriterSettings()
    logs.configure(SERVICE, settings.log_level)
    asyncio.run(run(settings, ensure_topics(settings.kafka, settings.kafka.topics.all())))


if __name__ == "__main__":
    exit_with(main, f"linewatch service {SERVICE}")
