"""Readers that assign partitions themselves (observers, the live view, what-if replays, the alerter's alarm view)
read every partition the broker has for a topic, not the count in their own settings: a tool run from a laptop
with the default 4 against compose's 12 must not miss two thirds of the alarms, silently."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from linewatch.core.kafka import RecordProducer, TopicReader, ensure_topics, partitions_of
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import Broker

pytestmark = pytest.mark.production

TOPIC = "made.with.three"


def made_with_three_partitions(broker: Broker) -> KafkaSettings:
    """The topic made with 3 partitions, one record in each; settings that say 1, as a reader's might."""
    ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=3), [TOPIC])
    producer = RecordProducer(broker.bootstrap)
    for partition in range(3):
        producer.send(TOPIC, partition, b"unit", f"in {partition}".encode())
    producer.close()
    return KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=1)


def test_a_topic_reader_reads_every_partition_the_broker_has(broker: Broker) -> None:
    settings = made_with_three_partitions(broker)
    reader = TopicReader(settings, TOPIC, fetch_max_wait_ms=20)
    seen: dict[int, bytes] = {}
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            reader.read_records(lambda record: seen.update({record.partition: record.value}), 0.5)
    finally:
        reader.close()
    assert seen == {p: f"in {p}".encode() for p in range(3)}


def test_an_aiokafka_consumer_gets_the_brokers_partitions_and_a_new_topic_the_settings_count(broker: Broker) -> None:
    settings = made_with_three_partitions(broker)

    async def ask() -> tuple[list[int], list[int]]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            return partitions_of(consumer, TOPIC, settings), partitions_of(consumer, "not.made.yet", settings)
        finally:
            # aiokafka 0.14's stop() without a group re-raises the cancellation of its own reset task
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()

    assert asyncio.run(ask()) == ([0, 1, 2], [0])
