"""`linewatch bench broker`: what the dev broker (Tansu, memory storage) costs at one fixed light load as its
partitions fill with record batches.

Measured (docs/benchmarks.md, latency): on Tansu's memory storage a fetch that returns records costs the broker
more the more batches the partition holds (its storage lists them all); Apache Kafka looks a fetch's offset up in
an index. One topic, one consumer reading at the head (the services' fetch wait) and one producer sending a
one-record batch every 10 ms: Tansu's CPU over each stretch of that load, after filling the partition(s) up to
more batches each time (the fills are not timed; the batches each step's load adds count too). As a control, the
consumer alone at the head, where there is nothing to return.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from linewatch.core.console import out
from linewatch.core.kafka import ensure_topics
from linewatch.core.settings import KafkaSettings
from linewatch.tools.bench import cpu_seconds
from linewatch.tools.devstack import Broker

TOPIC = "bench.broker"
PAYLOAD = b"x" * 200  # about a 10-sample frame's size
SEND_EVERY_S = 0.01
FILL_CHUNK = 500


async def _load(
    bootstrap: str, producer: AIOKafkaProducer | None, seconds: float, fetch_max_wait_ms: int, group: str
) -> tuple[int, int]:
    """`seconds` of a consumer at the head (and the producer's batches, if one is given); the records read and
    sent."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="latest",  # right here: every batch holds one record (platform notes)
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=1000)  # joined and positioned before the clock starts
        read, sent, until = 0, 0, time.monotonic() + seconds

        async def consume() -> None:
            nonlocal read
            while time.monotonic() < until:
                batches = await consumer.getmany(timeout_ms=100)
                read += sum(map(len, batches.values()))

        async def produce() -> None:
            nonlocal sent
            while producer is not None and time.monotonic() < until:
                await (await producer.send(TOPIC, PAYLOAD))
                sent += 1
                await asyncio.sleep(SEND_EVERY_S)

        await asyncio.gather(consume(), produce())
        return read, sent
    finally:
        await consumer.stop()


async def _fill(producer: AIOKafkaProducer, batches: int) -> None:
    """`batches` one-record batches (each send awaited apart from the others in its chunk: no batching)."""
    for start in range(0, batches, FILL_CHUNK):
        sent = [await producer.send(TOPIC, PAYLOAD) for _ in range(min(FILL_CHUNK, batches - start))]
        await asyncio.gather(*sent)


async def _measure(
    broker: Broker, partitions: int, steps: tuple[int, ...], seconds: float, fetch_max_wait_ms: int
) -> None:
    assert broker.process is not None
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=partitions)
    ensure_topics(kafka, [TOPIC])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    await producer.start()
    pids = {"broker": broker.process.pid}

    async def timed(sender: AIOKafkaProducer | None, group: str) -> tuple[float, int, int]:
        before = cpu_seconds(pids)["broker"]
        read, sent = await _load(broker.bootstrap, sender, seconds, fetch_max_wait_ms, group)
        return (cpu_seconds(pids)["broker"] - before) / seconds, read, sent

    try:
        held = 0
        for step, target in enumerate(steps):
            await _fill(producer, max(0, target - held))
            held = max(held, target)
            share, read, sent = await timed(producer, f"loaded-{step}")
            idle, _, _ = await timed(None, f"idle-{step}")
            out(
                f"held {held:>7,} batches ({held // partitions:>6,} a partition): broker {share:4.0%} of a core with "
                f"{read / seconds:,.0f} records/s read at the head, {idle:4.0%} idle"
            )
            held += sent
    finally:
        await producer.stop()


def bench_broker(partitions: int, steps: tuple[int, ...], seconds: float, fetch_max_wait_ms: int | None) -> int:
    if fetch_max_wait_ms is None:
        fetch_max_wait_ms = KafkaSettings().fetch_max_wait_ms
    broker = Broker().start()
    try:
        out(
            f"broker      Tansu, memory storage; topic of {partitions} partition(s); a one-record batch every "
            f"{SEND_EVERY_S * 1000:.0f} ms read at the head ({fetch_max_wait_ms} ms fetch wait), {seconds:g} s a step"
        )
        asyncio.run(_measure(broker, partitions, steps, seconds, fetch_max_wait_ms))
    finally:
        broker.stop()
    return 0
