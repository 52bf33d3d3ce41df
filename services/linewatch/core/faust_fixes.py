"""Where faust is changed, and why. Each function replaces one faust (or aiokafka driver) method with a version
that fixes a hole met on this project's runs (lost or repeated records, stalled commits, crashed recoveries) or
removes per-record work that `linewatch bench stages` measured. faust-streaming is pinned (pyproject.toml), and
the unit tests (`test_faust_*.py`, `test_deliver_at_once.py`) run the fixes on faust's real classes, so an
upgrade that moves a method fails there first. `faust_app` applies them all (`fix_faust`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

log = logging.getLogger(__name__)


def fix_faust(fetch_max_wait_ms: int) -> None:
    """Every fix below; each is applied once however often this runs."""
    _shorten_faust_fetch_wait(fetch_max_wait_ms)
    _patch_faust_recovery()
    _patch_faust_producer_flush()
    _patch_faust_seek_race()
    _deliver_without_tasks()
    _deliver_at_once()
    _consume_on_the_loop()


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


def _consume_on_the_loop() -> None:
    """faust runs the aiokafka consumer in a thread with its own event loop: each fetch, commit and seek is put on
    that thread's method queue and its result handed back across threads (`call_soon_threadsafe`, a wake-up through
    the loop's self-pipe, the GIL passed between threads). Live at 2,300 samples/s that thread took 4.5-5.3 % of a
    core in each faust service, a sixth to two fifths of it (`/proc/PID/task`, 2026-12-07). Here the consumer is a
    task of the app's loop and those calls are awaited directly, as in a bare aiokafka loop: the validator then spent
    13 % less CPU, the alerter 7 % and the scorer 6 % (three alternating pairs of `bench latency`). The thread kept
    heartbeats going while the loop was busy; the agents do their long work (model loads, training, reports) in
    `asyncio.to_thread`."""
    from faust.transport.drivers import aiokafka as driver
    from mode.utils.futures import maybe_async

    if getattr(driver.Consumer._new_consumer_thread, "linewatch_on_loop", False):
        return

    class ConsumerOnTheLoop(driver.AIOKafkaConsumerThread):
        """faust's consumer thread, started as a task of the app's loop instead of a thread."""

        def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
            super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
            self._serving: asyncio.Future[None] | None = None

        async def start(self) -> None:
            # `ServiceThread.start` without the thread: `_serve` starts the service, reports through
            # `_thread_running` (or raises there), then waits until stopped and shuts it down.
            self._thread_started.set()
            self._thread_running = self.parent_loop.create_future()
            self._serving = asyncio.ensure_future(self._serve())
            self._serving.add_done_callback(lambda task: task.cancelled() or task.exception())  # raised at start
            try:
                await self._thread_running
            finally:
                self._thread_running = None

        async def on_thread_started(self) -> None:
            pass  # no method queue: nothing is called across threads

        async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
            return await maybe_async(fun(*args, **kwargs))  # as the method queue runs it: plain or coroutine

        async def cast_thread(self, fun: Any, *args: Any, **kwargs: Any) -> None:
            self.add_future(maybe_async(fun(*args, **kwargs)))

        async def _gather_remaining_tasks(self) -> None:
            pass  # faust's sweep cancels every task of the thread's loop: here that is the whole app's

    def new_consumer_thread(self: Any) -> Any:
        return ConsumerOnTheLoop(self, loop=self.loop, beacon=self.beacon)

    new_consumer_thread.linewatch_on_loop = True  # type: ignore[attr-defined]
    driver.Consumer._new_consumer_thread = new_consumer_thread  # type: ignore[method-assign]


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
