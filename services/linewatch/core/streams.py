"""faust as the stream services (validator, scorer, alerter) use it: the app with at-least-once settings, the
worker with a bounded stop, and how agents take batches, write tables and send records."""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn

from msgspec import structs

from linewatch.core.contract import dead_letter, encoder
from linewatch.core.faust_fixes import fix_faust
from linewatch.core.heap import freeze_startup_heap
from linewatch.core.kafka import faust_credentials, source_of
from linewatch.core.settings import CommonSettings, KafkaSettings
from linewatch.core.stats import StatsCounter
from linewatch.core.stopping import exit_unless_stopped_within

log = logging.getLogger(__name__)


async def send_acknowledged(topic: Any, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Send records to a faust topic and return once Kafka acknowledged all of them.

    Straight to the aiokafka producer inside the app's: `Topic.send` wraps each record in a pending message, a
    future, two sensor calls and a callback, none of which we use; they were 40 % of the validator's CPU a record at
    1 sample a frame (`bench stages`, 2026-12-04). faust's driver around aiokafka's send only adds a signal a record
    that nothing here listens to (4 %, 2026-12-05)."""
    producer, name = topic.app.producer._ensure_producer(), topic.get_topic_name()
    await asyncio.gather(*[await producer.send(name, value, key=key) for key, value in records])


async def dead_letter_event(
    topic: Any, event: Any, stage: str, reason: str, detail: str, payload: bytes | None = None
) -> None:
    """Send what an agent could not process to the dead-letter topic; the faust commit waits for it."""
    letter = dead_letter(
        stage=stage,
        reason=reason,
        detail=detail,
        source=source_of(event.message),
        source_bytes=event.value or b"",
        payload=payload,
    )
    await topic.send(key=event.key, value=encoder.encode(letter))
    log.info("dead-lettered", extra={"stage": stage, "reason": reason, **structs.asdict(letter.source)})


def store_batch(stream: Any, table: Any, last_event: dict[bytes, Any], values: dict[bytes, bytes]) -> None:
    """Write each key's value of a batch to a faust table. A table write goes to the changelog partition of the
    stream's current event; in a batch that must be the key's own last event (`last_event`). No await in between:
    the stream's own iteration never sees the swap."""
    current = stream.current_event
    for key, event in last_event.items():
        stream._set_current_event(event)
        table[key] = values[key]
    stream._set_current_event(current)


async def take_batches(
    stream: Any, max_records: int, within_s: float, idle_s: float | None = None
) -> AsyncIterator[list[Any]]:
    """The events of an agent's stream in batches: what its queue holds, up to `max_records`, closed `within_s`
    after the batch's first event; each batch acknowledged once the agent's turn on it returns. What faust's
    `take_events` gives, without its passive drainer: that runs the stream's per-event iteration (a turn of the
    event loop, a processor coroutine and two sensor calls an event), about half of faust's own cost a record at 1
    sample a frame (`linewatch bench stages`). What that iteration does for faust is done here a batch at a time:
    records of an earlier assignment (generation) or taken while flow is stopped (a rebalance) are acknowledged
    unprocessed, every record is tracked as unacknowledged (the commit waits for it) and each partition's last
    event is reported to the monitor (faust's slow-processing check). With `idle_s`, an empty batch each `idle_s`
    that nothing arrives in, for an agent that acts on time passing."""
    app, queue = stream.app, stream.channel.queue
    flow_control, acking_topics, consumer = app.flow_control, app.topics.acking_topics, app.consumer
    loop = asyncio.get_running_loop()
    await stream.maybe_start()
    while not stream.should_stop:
        try:
            if idle_s is None:
                events = [await queue.get()]
            else:
                try:
                    events = [await asyncio.wait_for(queue.get(), idle_s)]
                except TimeoutError:
                    yield []
                    continue
            closes = loop.time() + within_s
            while len(events) < max_records:
                if not queue.empty():
                    events.append(queue.get_nowait())
                    continue
                remaining = closes - loop.time()
                if remaining <= 0:
                    break
                try:
                    events.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
        except StopAsyncIteration:  # faust stopping the channel (a worker's shutdown), as its own iteration ends
            return
        current: list[Any] = []
        skipped: list[Any] = []
        latest: dict[Any, Any] = {}
        generation, active = app.consumer_generation_id, flow_control.is_active()
        for event in events:
            message = event.message
            if not active or message.generation_id != generation:
                skipped.append(event)
                continue
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            latest[message.tp] = event
            current.append(event)
        for tp, event in latest.items():
            stream._on_stream_event_in(tp, event.message.offset, stream, event)
        try:
            if current:
                stream._set_current_event(current[-1])
                stream.events_total += len(current)
                yield current
        finally:
            stream._set_current_event(None)
            for event in (*skipped, *current):
                message = event.message
                if event.ack():
                    stream._on_message_out(message.tp, message.offset, message)


def publish_stats(app: Any, topic: str, stats: StatsCounter, interval_s: float) -> None:
    """A faust timer that sends the service's counters to the stats topic (live view, dashboards, benchmarks)."""
    stats_topic = app.topic(topic)

    @app.timer(interval=interval_s)  # type: ignore[untyped-decorator]
    async def publish() -> None:
        await stats_topic.send(key=stats.service.encode(), value=stats.snapshot())


def _lean_faust_classes() -> tuple[type, type]:
    """faust's Schema and Monitor, trimmed of per-record work we do not use (`faust_app` sets them as the app's
    `Schema` and `Monitor`). Each costs ~5 us a record, a twentieth of faust's own cost a record at 1 sample a frame
    (`linewatch bench stages`)."""
    import faust
    from faust.sensors.monitor import Monitor

    class RawSchema(faust.Schema):  # type: ignore[type-arg]
        """Our keys and values are bytes (msgspec decodes them in the agents). For a raw topic the stream's event
        is made at once, without faust's codec lookups and its `conf.Event` lookup a record (6.4 against 0.6 us)."""

        def compile(self, app: Any, **options: Any) -> Any:
            raw_key = self.key_type is None and (self.key_serializer or app.conf.key_serializer) == "raw"
            raw_value = self.value_type is None and (self.value_serializer or app.conf.value_serializer) == "raw"
            if not (raw_key and raw_value):
                return super().compile(app, **options)
            event_type = app.conf.Event

            def make_event(message: Any) -> Any:
                return event_type(app, message.key, message.value, message.headers, message)

            async def decode(message: Any, *, propagate: bool = False) -> Any:
                return make_event(message)

            decode.linewatch_make_event = make_event  # type: ignore[attr-defined]  # for `_deliver_at_once`
            return decode

    class LeanMonitor(Monitor):
        """faust's Monitor, a sensor on every record, keeps counters and timings that only its web views read (off
        here; our services count for themselves). Kept: when a partition's stream last took an event, which faust's
        slow-processing check reads."""

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            pass

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            self.stream_inbound_time[tp] = time.monotonic()

        def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
            pass

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            pass

        def track_tp_end_offset(self, tp: Any, offset: int) -> None:
            pass

    return RawSchema, LeanMonitor


def faust_app(service: str, settings: KafkaSettings, **overrides: Any) -> Any:
    """A faust App named after the service (its consumer group) with at-least-once settings."""
    import faust

    fix_faust(settings.fetch_max_wait_ms)
    # Tables live in memory and come back from their changelogs: faust's data directory only has to exist.
    datadir = tempfile.mkdtemp(prefix=f"linewatch-{service}-")
    atexit.register(shutil.rmtree, datadir, ignore_errors=True)
    config: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        "processing_guarantee": "at_least_once",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "web_enabled": False,
        "datadir": datadir,
        "topic_partitions": settings.partitions,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 4,
        "broker_commit_interval": 0.5,
        "broker_commit_every": 1000,
        # No linger: an agent sends its batch's records at once and awaits them (`send_acknowledged`), so none
        # would join them; 5 ms only delayed every hop (and cost CPU: docs/benchmarks.md, 2026-12-07).
        "producer_linger_ms": 0,
        "producer_max_batch_size": 1024 * 1024,
        "producer_max_request_size": 4 * 1024 * 1024,
        "stream_buffer_maxsize": 4096,
        "consumer_max_fetch_size": 16 * 1024 * 1024,
        "broker_max_poll_records": 2000,
        "broker_credentials": faust_credentials(settings),
        # The check guards a RocksDB file that outlived its topic; our tables live in memory and are rebuilt from
        # the changelog. On Tansu the end offset it compares with is short (platform notes), so a worker that took
        # partitions over refused to start after a peer's kill -9 (ConsistencyError).
        "recovery_consistency_check": False,
    }
    config["Schema"], config["Monitor"] = _lean_faust_classes()
    config.update(overrides)
    app = faust.App(settings.group(service), **config)

    @app.task  # type: ignore[untyped-decorator]
    async def freeze_heap_once_started() -> None:
        freeze_startup_heap()  # what the worker built so far lives as long as it does (linewatch/core/heap.py)

    @app.on_partitions_assigned.connect
    def log_assignment(_: Any, /, *assigned: Any, signal: Any, **__: Any) -> None:
        # Which worker holds which partition, rebalance by rebalance: what a missing stretch is traced back to.
        tps = sorted(f"{tp.topic}:{tp.partition}" for tps in assigned for tp in tps)
        log.info("partitions assigned", extra={"partitions": tps})

    return app


def run_faust_worker(app: Any, settings: CommonSettings) -> NoReturn:
    """The service's faust worker until SIGTERM or SIGINT; its stop is bounded by `settings.stop_within_s`."""
    import faust

    class BoundedStopWorker(faust.Worker):
        async def on_stop(self) -> None:
            exit_unless_stopped_within(settings.stop_within_s)
            await super().on_stop()

    # quiet, no spinner: faust's console lines ("OK ^", cursor codes) would break the log's one JSON object a line.
    worker = BoundedStopWorker(
        app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False, quiet=True
    )
    worker.spinner = None
    worker.execute_from_commandline()
