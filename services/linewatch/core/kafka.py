"""Kafka plumbing shared by services: topic creation and a faust app tuned for at-least-once."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Self

from msgspec import structs

from linewatch.core.contract import SourcePosition, dead_letter, encoder
from linewatch.core.heap import freeze_startup_heap
from linewatch.core.settings import CommonSettings, KafkaSettings
from linewatch.core.stats import StatsCounter
from linewatch.core.stopping import exit_unless_stopped_within

log = logging.getLogger(__name__)


def kafka_python_security(settings: KafkaSettings) -> dict[str, Any]:
    """TLS and SASL options for kafka-python clients (admin, observers, record, replay)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.endswith("SSL"):
        options |= {
            "ssl_cafile": _path(settings.ssl_cafile),
            "ssl_certfile": _path(settings.ssl_certfile),
            "ssl_keyfile": _path(settings.ssl_keyfile),
            "ssl_check_hostname": True,
        }
    if settings.security_protocol.startswith("SASL"):
        options |= _sasl(settings)
    return options


def aiokafka_security(settings: KafkaSettings) -> dict[str, Any]:
    """The same for aiokafka clients (writer, gateway, alerter view, learning)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.endswith("SSL"):
        options["ssl_context"] = tls_context(settings)
    if settings.security_protocol.startswith("SASL"):
        options |= _sasl(settings)
    return options


def faust_credentials(settings: KafkaSettings) -> Any:
    """faust's `broker_credentials`: None for PLAINTEXT."""
    import faust

    context = tls_context(settings) if settings.security_protocol.endswith("SSL") else None
    if settings.security_protocol.startswith("SASL"):
        sasl = _sasl(settings)
        return faust.SASLCredentials(
            username=sasl["sasl_plain_username"],
            password=sasl["sasl_plain_password"],
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    return faust.SSLCredentials(context) if context is not None else None


def tls_context(settings: KafkaSettings) -> ssl.SSLContext:
    """Verifies the broker against the CA (the system's when none is set), with a client certificate if set."""
    context = ssl.create_default_context(cafile=_path(settings.ssl_cafile))
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def _sasl(settings: KafkaSettings) -> dict[str, Any]:
    assert settings.sasl_username is not None and settings.sasl_password is not None, "checked by the settings"
    return {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password.get_secret_value(),
    }


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def ensure_topics(settings: KafkaSettings, topics: list[str], timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics with kafka-python's admin client (idempotent); returns their ids now, which a
    service's broker watch starts from (see `linewatch.core.health`)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers,
                client_id="linewatch-admin",
                **kafka_python_security(settings),
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service won the race
                admin.create_topics([NewTopic(t, settings.partitions, 1) for t in missing])
            log.info("topics created", extra={"topics": missing, "partitions": settings.partitions})
        return {t["name"]: str(t["topic_id"]) for t in admin.describe_topics(topics) if t["error_code"] == 0}
    finally:
        admin.close()


def _shorten_faust_fetch_wait(fetch_max_wait_ms: int) -> None:
    """faust hard-codes fetch_max_wait_ms=1500; Tansu holds every fetch that long, so latency would too."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "linewatch_fetch_wait", None) == fetch_max_wait_ms:
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts its fetcher
        return consumer

    create_worker_consumer.linewatch_fetch_wait = fetch_max_wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def _patch_faust_recovery() -> None:
    """Two fixes to faust's table recovery, both met in kill -9 runs on Tansu.
    1. faust restores a table by reading each changelog partition up to the end offset the broker reports. Tansu
    reports a short end after a multi-record batch (platform notes), and a table written a batch at a time
    (`store_batch`) ends in one: the keys after the first of that batch were restored from their previous write, so
    a restarted alerter missed transitions. The end of each partition this worker takes over (active) is counted
    instead: read on from the reported end (a fetch returns whole batches) until nothing more comes. Nobody writes
    there meanwhile; a standby's partition is being written by its owner, and a standby reads on anyway. On Apache
    Kafka this reads one record and confirms it.
    2. A partition whose offset is unknown (None) is sought from the start instead of crashing the worker."""
    from faust.tables.recovery import Recovery

    original = Recovery._build_highwaters
    if getattr(original, "linewatch_counted", False):
        return

    async def build_highwaters(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await original(self, consumer, tps, destination, title)
        if title == "active" and not self.app.in_transaction:
            # faust keeps the last offset (end - 1) as the highwater; -1 for an empty partition.
            ends = await _counted_ends(self.app, {tp: destination[tp] + 1 for tp in tps})
            for tp, end in ends.items():
                destination[tp] = end - 1  # a Counter: update() would add

    original_seek = Recovery._seek_offsets

    async def seek_offsets(self: Any, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        # A rebalance landing in a recovery re-adds its partitions with offset None before the running round
        # seeks them (a scorer crashed on it: "Offset must be a positive integer"). -1 is faust's "from the start";
        # the round the rebalance started builds the offsets again.
        for tp in tps:
            if offsets.get(tp) is None:
                offsets[tp] = -1
        await original_seek(self, consumer, tps, offsets, title)

    build_highwaters.linewatch_counted = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]
    Recovery._seek_offsets = seek_offsets  # type: ignore[method-assign]


def _patch_faust_producer_flush() -> None:
    """faust's commit flushes its producer before it commits offsets, but the producer buffer's flush returned once
    its queue was empty or after 0.1 s without a send: a send in progress (taken off the queue, waiting for room in
    a full batch or for metadata) or a slow one was left out, and the offsets of what it carried were committed.
    A kill then lost table writes and records that the commit said were out. It now waits for both."""
    from faust.transport.producer import ProducerBuffer

    original_send = ProducerBuffer._send_pending
    if getattr(original_send, "linewatch_tracked", False):
        return

    async def send_pending(self: Any, fut: Any) -> None:
        self.linewatch_sending = True
        try:
            await original_send(self, fut)
        finally:
            self.linewatch_sending = False

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "linewatch_sending", False):
            if self.state != "running" and self.size:
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)

    send_pending.linewatch_tracked = True  # type: ignore[attr-defined]
    ProducerBuffer._send_pending = send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]


def _patch_faust_seek_race() -> None:
    """Two holes in faust's seek back to the committed offsets, which it does after each rebalance and whenever a
    fetch returns while its flow is stopped (that fetch's records are not handed on), and one in its commit.
    1. aiokafka leaves a partition with nothing committed where it is, so records fetched from it and not handed on
       were skipped for good: a partition fetched whole before a rebalance was never processed. Such a partition
       now goes to the log's start, as `earliest` says.
    2. The seek runs beside the fetcher. Records fetched before it were still handed on after it and moved faust's
       read offset past it, so the same records fetched again were dropped as already read: stretches never
       processed, commits stuck before them or (a jump in offsets counts as a gap) past them. A fetch that
       overlaps a seek is now thrown away from its first record met during or after the seek, and sought back.
    3. faust committed past records missing at the head of the acknowledged ones: its check was one short, and
       skipped for a partition with nothing committed. A commit now waits until every record from where reading
       started (the committed offset, else the first record fetched) is acknowledged; the broker's answer to a
       seek tells which records there do not exist. faust forgets acknowledgements it hands to a commit, landed or
       not, so what it handed over is remembered here.
    Going back only repeats records, which at-least-once allows; a commit held back shows in readiness."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer.getmany, "linewatch_seek_safe", False):
        return
    original_perform_seek = Consumer.perform_seek
    original_new_offset = Consumer._new_offset

    async def perform_seek(self: Any) -> None:
        self.linewatch_seeks = getattr(self, "linewatch_seeks", 0) + 1
        self.linewatch_seeking = getattr(self, "linewatch_seeking", 0) + 1
        try:
            await original_perform_seek(self)
            for tp in self.assignment():
                if not self._committed_offset.get(tp) and not self._is_changelog_tp(tp):
                    try:
                        await self.seek(tp, 0)
                    except Exception as exc:  # a rebalance took it: its next owner starts from the committed offset
                        log.warning("seek to the start failed", extra={"partition": str(tp), "error": repr(exc)})
            # Each partition's first record not known to be acknowledged: reading starts again at the committed
            # offset, or (nothing committed) at the first record fetched (getmany).
            self.linewatch_unread = {tp for tp in self.assignment() if not self._is_changelog_tp(tp)}
            heads = getattr(self, "linewatch_heads", {})
            for tp in self.linewatch_unread:
                heads.pop(tp, None)
                if self._committed_offset[tp] is not None:
                    heads[tp] = self._committed_offset[tp]
            self.linewatch_heads = heads
        finally:
            self.linewatch_seeking -= 1

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        # faust's own getmany, in one generator rather than two, and without its lookup of the partition's end offset
        # a record: that only feeds the monitor's end offsets, which LeanMonitor does not keep.
        seeks_before = getattr(self, "linewatch_seeks", 0)
        overlapped: set[Any] = set()
        records, active_partitions = await self._wait_next_records(timeout)
        app = self.app
        generation_id = app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:  # a rebalance stopped the flow: these records are not handed on
            try:
                await self.perform_seek()
            except Exception as exc:  # as faust: the next rebalance seeks again
                log.warning("seek while flow stopped failed", extra={"error": repr(exc)})
            return
        to_message, buffered = self._to_message, self._buffered_partitions
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active or app.consumer_generation_id != generation_id:
                break
            if active_partitions is not None and tp not in active_partitions and tp not in buffered:
                continue
            if getattr(self, "linewatch_seeking", 0) or getattr(self, "linewatch_seeks", 0) != seeks_before:
                overlapped.add(tp)
                continue
            message = to_message(tp, record)
            unread = getattr(self, "linewatch_unread", None)
            if unread and tp in unread:
                unread.discard(tp)
                learn_head(self, tp, message.offset)
            yield tp, message
        if overlapped:
            log.info("fetch overlapped a seek: seeking back", extra={"partitions": sorted(map(str, overlapped))})
            try:
                await self.perform_seek()
            except Exception as exc:  # a rebalance took them: their next owner starts from the committed offset
                log.warning("seek back after an overlapped fetch failed", extra={"error": repr(exc)})

    def new_offset(self: Any, tp: Any) -> int | None:
        acked, gap = self._acked[tp], self._gap[tp]
        heads = getattr(self, "linewatch_heads", None)
        if heads is None:
            heads = self.linewatch_heads = {}
        head = heads.get(tp, self._committed_offset[tp])
        if acked and head is not None:
            lowest = min(min(acked), gap.begin()) if gap else min(acked)
            if lowest > head:
                hold_commit(self, tp, head, lowest)
                return None
        getattr(self, "linewatch_held", {}).pop(tp, None)
        result: int | None = original_new_offset(self, tp)
        if result is not None:  # faust has dropped the acknowledgements below it, whether this commit lands or not
            heads[tp] = result if head is None else max(head, result)
        return result

    getmany.linewatch_seek_safe = True  # type: ignore[attr-defined]
    Consumer.getmany = getmany  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer._new_offset = new_offset  # type: ignore[method-assign]


# Records are acknowledged in order, so one missing before acknowledged ones was lost on its way to the stream, or
# its acknowledgement was; it is read again after the next rebalance or restart.
HELD_WARNING_S = 30.0


def hold_commit(consumer: Any, tp: Any, head: int, lowest: int) -> None:
    """Log a commit waiting for record `head`: when it starts, and once more if it still waits after
    `HELD_WARNING_S` (readiness then reports the partition as stalled)."""
    held = getattr(consumer, "linewatch_held", None)
    if held is None:
        held = consumer.linewatch_held = {}
    where = {
        "partition": str(tp),
        "first_unacknowledged": head,
        "first_acknowledged": lowest,
        "read_offset": consumer._read_offset.get(tp),  # faust's last record handed on since the seek
    }
    head_since_warned = held.get(tp)
    if head_since_warned is None or head_since_warned[0] != head:
        held[tp] = (head, time.monotonic(), False)
        log.info("commit waits for an unacknowledged record", extra=where)
    elif not head_since_warned[2] and time.monotonic() - head_since_warned[1] > HELD_WARNING_S:
        held[tp] = (head, head_since_warned[1], True)
        log.warning("commit held: a record before acknowledged ones is not acknowledged", extra=where)


def learn_head(consumer: Any, tp: Any, offset: int) -> None:
    """The first record fetched from a partition since the seek: where its reading starts."""
    head = consumer.linewatch_heads.get(tp)
    if head is None:
        consumer.linewatch_heads[tp] = offset  # nothing committed: the log's first record
    elif offset > head:
        gap = consumer._gap[tp]
        gap.addi(head, offset)  # the broker answered the seek with a later record: none between
        gap.merge_overlaps()  # faust adds the same jump as its own gap


def _deliver_without_tasks() -> None:
    """faust hands each fetched message to the streams with `wait_first(delivery, suspend_flow.wait())`, which makes
    four tasks a message (the delivery, the suspend flag, the stopped and crashed flags) and cancels three. Records
    `_deliver_at_once` does not queue itself come this way (table changelogs during recovery, records met during a
    rebalance). Their delivery seldom waits, so it is run at once; only when it does wait does it race the suspend
    flag, as before."""
    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    original = Consumer.wait_first
    if getattr(original, "linewatch_eager", False):
        return

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        # Two arguments, a coroutine first: the drain loop's call, the consumer's only one.
        if len(coros) != 2 or not asyncio.iscoroutine(coros[0]) or self.suspend_flow.is_set():
            return await original(self, *coros, timeout=timeout)
        delivery, suspended = coros
        try:
            waiting_on = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        return await original(self, finish_started(delivery, waiting_on), suspended, timeout=timeout)

    wait_first.linewatch_eager = True  # type: ignore[attr-defined]
    Consumer.wait_first = wait_first  # type: ignore[method-assign]


def _deliver_at_once() -> None:
    """faust's drain loop hands every fetched record to the conductor as a coroutine raced against the suspend flag;
    on its way to the stream's queue each record takes the conductor's lock and awaits a flow-control check, a
    producer-buffer check (a settings lookup a record) and its decode: about half of faust's own cost a record at 1
    sample a frame (`linewatch bench stages`, 2026-12-05). Here a record that nothing would hold up (flow running,
    no rebalance rebuilding the conductor's index, producer buffer under its limit, one raw channel on its partition
    with room in its queue) is put on that queue at once, as faust's handler would; any other record goes faust's
    way. The loop is otherwise faust's `Consumer._drain_messages`."""
    from faust.transport.consumer import CONSUMER_FETCHING, Consumer

    if getattr(Consumer._drain_messages, "linewatch_at_once", False):
        return

    async def drain_messages(self: Any, fetcher: Any) -> None:
        app = self.app
        conductor, flow_control, producer_buffer = app.topics, app.flow_control, app.producer.buffer
        handlers, index_lock = conductor._tp_to_callback, conductor._tp_to_callback_lock
        callback, read_offset, commit_every = self.callback, self._read_offset, self._commit_every

        def delivered_at_once(message: Any) -> bool:
            if (
                index_lock.locked()
                or not flow_control.is_active()
                or self.suspend_flow.is_set()
                or producer_buffer.queue is not None  # set for a threaded producer, whose size faust's check reads
                or len(producer_buffer.pending._queue) > producer_buffer.max_messages
            ):
                return False
            handler = handlers.get(message.tp)
            channels: Any = getattr(handler, "channels", ())  # faust's compiled handler; the pure-Python one has none
            if len(channels) != 1:
                return False
            (channel,) = channels
            make_event = getattr(channel.decode, "linewatch_make_event", None)
            queue = channel.queue
            if make_event is None or queue.full():
                return False
            message.refcount += 1
            high, drop = handler.on_pressure_high, handler.on_pressure_drop
            queue.put_nowait_enhanced(make_event(message), on_pressure_high=high, on_pressure_drop=drop)
            return True

        since_yield = 0
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # as faust: getmany may not give the loop a turn
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset, r_offset = message.offset, read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # read before: faust drops it too
                    if r_offset and offset - r_offset > 1 and conductor.acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not delivered_at_once(message):
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not app.should_stop:
                raise
        except asyncio.CancelledError:
            if not app.should_stop:
                raise
        except Exception as exc:
            log.exception("draining fetched records failed", extra={"error": repr(exc)})
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    drain_messages.linewatch_at_once = True  # type: ignore[attr-defined]
    Consumer._drain_messages = drain_messages  # type: ignore[method-assign]


async def finish_started(coro: Any, waiting_on: Any) -> Any:
    """Run to its end a coroutine started by hand (`coro.send(None)`) that is waiting on `waiting_on`, what it
    yielded: a future, or None for a bare turn of the loop. Cancelling this throws CancelledError into the
    coroutine, as cancelling a task would."""
    while True:
        thrown = None
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False  # taken over, as a task takes what its coroutine yields
                await waiting_on
        except BaseException as exc:
            # A future's own outcome is the coroutine's to read when it resumes. Anything else is thrown into it:
            # this task cancelled while the future waits, or in the same turn as the future finished (a task then
            # throws the cancellation in all the same; swallowed, a revoked partition's message went on).
            own_outcome = waiting_on is not None and waiting_on.done()
            if own_outcome and isinstance(exc, asyncio.CancelledError) and not waiting_on.cancelled():
                own_outcome = False
            if not own_outcome:
                thrown = exc
        try:
            waiting_on = coro.send(None) if thrown is None else coro.throw(thrown)
        except StopIteration as done:
            return done.value


async def _counted_ends(app: Any, reported: Mapping[Any, int], timeout_s: float = 5.0) -> dict[Any, int]:
    import aiokafka
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    ends = dict(reported)
    held = {aiokafka.TopicPartition(tp.topic, tp.partition): tp for tp, end in reported.items() if end}
    if not held:
        return ends
    conf = app.conf
    reader = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=server_list(app.transport.url, app.transport.default_port),
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=conf.consumer_max_fetch_size,
    )
    await reader.start()
    try:
        reader.assign(list(held))
        for aiotp, tp in held.items():
            reader.seek(aiotp, reported[tp] - 1)
        pending, deadline = set(held), time.monotonic() + timeout_s
        seen: set[Any] = set()
        while pending and time.monotonic() < deadline:
            fetched = await reader.getmany(*pending, timeout_ms=500)
            for aiotp, records in fetched.items():
                # The last record read, not the reader's position: on Tansu that can run past the log's end.
                ends[held[aiotp]] = max(ends[held[aiotp]], records[-1].offset + 1)
            # One broker answers every partition it leads in a fetch: a read one that brought nothing is at its end.
            pending -= seen - fetched.keys()
            seen |= fetched.keys()
        if pending:
            log.warning("changelog ends not counted in time", extra={"partitions": sorted(map(str, pending))})
    finally:
        # Tansu has dropped partitions' logs when a client went away mid-request (README, scale-out): let the
        # fetch in flight (50 ms wait) come back with nothing assigned before closing.
        reader.unsubscribe()
        await asyncio.sleep(0.2)
        await reader.stop()
    longer = {f"{tp.topic}:{tp.partition}": (reported[tp], end) for tp, end in ends.items() if end != reported[tp]}
    if longer:
        log.info("changelog ends counted past the reported ones", extra={"ends": longer})
    return ends


# Observers (live view, benchmarks, drills, recordings, tests) are not on the hot path: a long fetch wait keeps
# them from loading the broker and the machine they observe (Tansu answers a 10 ms fetch 100 times a second).
OBSERVER_FETCH_MAX_WAIT_MS = 200


def partitions_of(consumer: Any, topic: str, settings: KafkaSettings) -> list[int]:
    """The partitions the broker has for `topic` (a kafka-python or aiokafka consumer's metadata). A reader that
    took `settings.partitions` would silently miss the rest of a topic made with more: a tool on a laptop, default
    4, against the 12 of compose. A topic the broker does not know yet gets that count when it is created."""
    known = consumer.partitions_for_topic(topic)
    return sorted(known) if known else list(range(settings.partitions))


class TopicReader:
    """Reads a topic with assign() (group joins are slow on Tansu) from the beginning; `fetch_max_wait_ms` is
    also how late it may see a record (a benchmark timing arrivals wants a few ms)."""

    def __init__(
        self, settings: KafkaSettings, topic: str, fetch_max_wait_ms: int = OBSERVER_FETCH_MAX_WAIT_MS
    ) -> None:
        self.settings, self.topic, self._fetch_max_wait_ms = settings, topic, fetch_max_wait_ms
        self._consumer = self._open()

    def _open(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            enable_auto_commit=False,
            **kafka_python_security(self.settings),
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
        )
        partitions = [TopicPartition(self.topic, p) for p in partitions_of(consumer, self.topic, self.settings)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return consumer

    def read(self, on_value: Callable[[bytes], None], timeout_s: float = 0.5) -> None:
        self.read_records(lambda record: on_value(record.value), timeout_s)

    def read_records(self, on_record: Callable[[Any], None], timeout_s: float = 0.5) -> None:
        """As `read`, with the whole record (partition, offset, key) for readers that need where it lies."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            for records in self._consumer.poll(timeout_ms=remaining).values():
                for record in records:
                    on_record(record)
            if remaining == 0:
                return

    def read_until_quiet(self, on_record: Callable[[Any], None], quiet_s: float) -> None:
        """Every record from here on, until nothing new came for `quiet_s` (end offsets lie on Tansu, and a fixed
        time may end before a loaded broker has answered for every partition)."""
        seen = 0

        def counted(record: Any) -> None:
            nonlocal seen
            seen += 1
            on_record(record)

        while True:
            before = seen
            self.read_records(counted, quiet_s)
            if seen == before:
                return

    def close(self) -> None:
        self._consumer.close()

    def reopened(self) -> Self:
        """After the broker lost its state: the same reader from the beginning of the new topic (its positions
        were the old broker's), keeping what it has read so far."""
        self._consumer.close()
        self._consumer = self._open()
        return self


class RecordProducer:
    """kafka-python producer that remembers failed sends; close() flushes and raises if any failed."""

    def __init__(self, bootstrap_servers: str, security: dict[str, Any] | None = None) -> None:
        """`security`: `kafka_python_security(settings)` for a TLS or SASL cluster."""
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            **(security or {}),
            acks="all",
            linger_ms=5,
            batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
            retries=10,
        )
        self.failures: list[BaseException] = []

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """partition < 0: chosen by key, as any producer would."""
        future = self._producer.send(
            topic,
            value=value,
            key=key,
            headers=headers or [],
            partition=partition if partition >= 0 else None,
            timestamp_ms=timestamp_ms,
        )
        future.add_errback(self.failures.append)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()
        if self.failures:
            raise RuntimeError(f"{len(self.failures)} messages were not acknowledged by Kafka: {self.failures[0]!r}")


def source_of(record: Any) -> SourcePosition:
    """Where a Kafka record (aiokafka's, or a faust event's message) came from, for logs and dead letters."""
    key = record.key
    return SourcePosition(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
    )


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


async def take_batches(stream: Any, max_records: int, within_s: float) -> AsyncIterator[list[Any]]:
    """The events of an agent's stream in batches: what its queue holds, up to `max_records`, closed `within_s`
    after the batch's first event; each batch acknowledged once the agent's turn on it returns. What faust's
    `take_events` gives, without its passive drainer: that runs the stream's per-event iteration (a turn of the
    event loop, a processor coroutine and two sensor calls an event), about half of faust's own cost a record at 1
    sample a frame (`linewatch bench stages`). What that iteration does for faust is done here a batch at a time:
    records of an earlier assignment (generation) or taken while flow is stopped (a rebalance) are acknowledged
    unprocessed, every record is tracked as unacknowledged (the commit waits for it) and each partition's last
    event is reported to the monitor (faust's slow-processing check)."""
    app, queue = stream.app, stream.channel.queue
    flow_control, acking_topics, consumer = app.flow_control, app.topics.acking_topics, app.consumer
    loop = asyncio.get_running_loop()
    await stream.maybe_start()
    while not stream.should_stop:
        try:
            events = [await queue.get()]
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

    _shorten_faust_fetch_wait(settings.fetch_max_wait_ms)
    _patch_faust_recovery()
    _patch_faust_producer_flush()
    _patch_faust_seek_race()
    _deliver_without_tasks()
    _deliver_at_once()
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
        "producer_linger_ms": 5,
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
