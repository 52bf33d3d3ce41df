"""Every Kafka service's watch on the broker, and its health over HTTP (GET /livez, GET /readyz).

A broker that comes back without what it held (Tansu is memory-only; a Kafka whose volume was lost; a topic
deleted and recreated) hands out topics with new ids and forgets committed offsets, while a running consumer
keeps its old positions and silently skips what is produced below them. The watch sees the new ids, recreates
the topics, reports the gap (a dead letter per lost topic, a `broker_state_lost` counter) and exits with
EXIT_BROKER_STATE_LOST so the supervisor (`linewatch up`, compose, k8s) starts the service afresh.

Readiness fails while the broker is unreachable, and when an input partition has records waiting that the service's
consumer group has not committed for `stall_s` (partition by partition: one stuck partition shows while others move
on). Tansu reports end offsets short (platform notes), so waiting input is a lower bound: a stall with a growing
backlog shows, a last unread batch may not. Liveness fails when the event loop has not beaten for `live_timeout_s`
(a blocked loop), or once the watch has decided to exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from linewatch.core.contract import SourcePosition, dead_letter, encoder
from linewatch.core.services import service as registered
from linewatch.core.settings import CommonSettings, HealthSettings, KafkaSettings
from linewatch.core.stats import StatsCounter

log = logging.getLogger(__name__)

EXIT_BROKER_STATE_LOST = 75  # EX_TEMPFAIL: start me again; `linewatch up` shows it as the broker's loss
PENDING_REPORT = "broker-loss-report.json"
UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


@dataclass
class HealthState:
    """What /livez and /readyz answer; written by the watch thread and the event loop's beat."""

    live_timeout_s: float
    ready: bool = False
    reason: str = "starting"
    exiting: bool = False
    last_beat: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def liveness(self) -> tuple[bool, str]:
        if self.exiting:
            return False, "exiting: the broker lost its state"
        stale_s = time.monotonic() - self.last_beat
        if stale_s > self.live_timeout_s:
            return False, f"event loop blocked for {stale_s:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        live, why = self.liveness()
        return (self.ready, self.reason) if live else (False, why)


class BrokerWatch(threading.Thread):
    """Polls the broker every `check_interval_s` in its own thread (kafka-python's admin client), so it judges the
    service from outside its event loop."""

    def __init__(
        self,
        service: str,
        kafka: KafkaSettings,
        inputs: list[str],
        stats: StatsCounter,
        settings: HealthSettings,
        topic_ids: dict[str, str],
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        super().__init__(name=f"{service}-broker-watch", daemon=True)
        self.service = service
        self.kafka = kafka
        self.inputs = inputs
        self.stats = stats
        self.settings = settings
        self.state = HealthState(settings.live_timeout_s)
        self._exit_process = exit_process
        self._admin: Any = None
        # As last seen: a new id means the topic was recreated. The first ids come from the service's start, before
        # it consumed anything: a loss before the watch's first check would otherwise pass unseen.
        self._topic_ids = dict(topic_ids)
        self._first_check = True
        self._committed: dict[tuple[str, int], int] = {}
        self._unreachable_since: float | None = None
        self._moved_at: dict[tuple[str, int], float] = {}  # partition -> when its committed offset last moved
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.settings.check_interval_s):
            try:
                self.check()
            except Exception as exc:  # the broker away, or a reply we cannot use: not ready, say so once
                self._unreachable(exc)

    def check(self) -> None:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        admin = self._connect()
        if self._first_check:
            self._send_pending_report()
            self._first_check = False
        described = admin.describe_topics(self.kafka.topics.all())
        if self._unreachable_since is not None:
            log.warning("broker reachable again", extra={"away_s": round(time.monotonic() - self._unreachable_since)})
            self._unreachable_since = None
        ids = {t["name"]: str(t["topic_id"]) for t in described if t["error_code"] == 0}
        known = ids.keys() | {t["name"] for t in described if t["error_code"] == UNKNOWN_TOPIC}  # not a passing error
        lost = {name: was for name, was in self._topic_ids.items() if name in known and ids.get(name) != was}
        if lost:
            self._lost(lost, ids)
            return
        self._topic_ids |= ids  # a topic answering with a passing error keeps the id it had
        partitions = [
            TopicPartition(t["name"], p["partition_index"])
            for t in described
            if t["name"] in self.inputs and t["error_code"] == 0
            for p in t["partitions"]
        ]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        group = self.kafka.group(self.service)
        committed = {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in admin.list_group_offsets({group: partitions}).get(group, {}).items()
        }
        waiting = {
            (tp.topic, tp.partition): max(0, ends[tp].offset - max(0, committed.get((tp.topic, tp.partition), 0)))
            for tp in ends
        }
        self.stats.counters["input_waiting"] = sum(waiting.values())  # consumer lag, for the pipeline-health dashboard
        stalled = self.stalled(waiting, committed, time.monotonic())
        if stalled:
            self._set(
                False,
                f"{sum(waiting.values())} records waiting; partitions {', '.join(stalled)} not processed for "
                f"{self.settings.stall_s:.0f} s",
            )
        else:
            self._set(True, "ready")

    def stalled(
        self, waiting: dict[tuple[str, int], int], committed: dict[tuple[str, int], int], now: float
    ) -> list[str]:
        """Input partitions with records waiting whose committed offset has not moved for `stall_s`, each on its
        own: one stuck partition shows while the group's others move on."""
        for key, count in waiting.items():
            self._moved_at.setdefault(key, now)
            if count == 0 or committed.get(key) != self._committed.get(key):
                self._moved_at[key] = now
        self._committed = committed
        return [
            f"{t}:{p}"
            for (t, p), count in sorted(waiting.items())
            if count and now - self._moved_at[t, p] > self.settings.stall_s
        ]

    def _connect(self) -> Any:
        from kafka.admin import KafkaAdminClient

        from linewatch.core.kafka import kafka_python_security

        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.kafka.bootstrap_servers,
                client_id=f"{self.service}-health",
                **kafka_python_security(self.kafka),
                request_timeout_ms=int(self.settings.check_interval_s * 2500),
            )
        return self._admin

    def _unreachable(self, exc: Exception) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.warning("broker unreachable", extra={"error": f"{type(exc).__name__}: {exc}"})
        self._set(False, f"broker unreachable for {time.monotonic() - self._unreachable_since:.0f} s")

    def _set(self, ready: bool, reason: str) -> None:
        self.stats.counters["ready"] = int(ready)  # a gauge beside the counters: the dashboards' up/down
        if ready != self.state.ready:
            log.info("ready" if ready else "not ready", extra={"reason": reason})
        self.state.ready, self.state.reason = ready, reason

    def _lost(self, lost: dict[str, str], ids: dict[str, str]) -> None:
        """Keep the report of the gap for the next start, and exit for it. The report waits because this process's
        clients still send to the old broker's topics: on Tansu a send to a vanished topic leaves orphan partitions
        that refuse later producers, so nothing is sent before every old client is gone (see `Supervisor`)."""
        self.state.exiting = True
        log.error(
            "broker lost its state: topics recreated, committed offsets gone; exiting to start afresh",
            extra={"topics": sorted(lost), "exit_code": EXIT_BROKER_STATE_LOST},
        )
        letters = []
        for topic in sorted(set(lost) & set(self.inputs)):
            processed = {p: o for (t, p), o in self._committed.items() if t == topic}
            detail = (
                f"{topic} was recreated by the broker (id {lost[topic]} -> {ids.get(topic)}): what it held and "
                f"{self.service} had not processed is lost; committed offsets before the loss: {processed}"
            )
            payload = {"topic": topic, "topic_id_before": lost[topic], "topic_id_now": ids.get(topic)}
            letter = dead_letter(
                stage=self.service,
                reason="broker_state_lost",
                detail=detail,
                source=SourcePosition(topic=topic, partition=-1, offset=-1),
                source_bytes=b"",
                payload=json.dumps(payload | {"committed": processed}).encode(),
            )
            letters.append(encoder.encode(letter).decode())
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            pending = self.settings.state_dir / f"{self.service}.{PENDING_REPORT}"
            pending.with_suffix(".tmp").write_text(json.dumps(letters))
            pending.with_suffix(".tmp").replace(pending)
        except OSError as exc:  # the report is best effort; the restart is not
            log.error("could not keep the report of the loss", extra={"error": f"{type(exc).__name__}: {exc}"})
        self._exit_process(EXIT_BROKER_STATE_LOST)

    def _send_pending_report(self) -> None:
        """At the first check of a new start: the dead letters a previous run kept when the broker lost its
        state, and the `broker_state_lost` counter; the file goes once Kafka has acknowledged them."""
        from linewatch.core.kafka import RecordProducer, kafka_python_security

        pending = self.settings.state_dir / f"{self.service}.{PENDING_REPORT}"
        if not pending.is_file():
            return
        try:
            letters = [str(letter) for letter in json.loads(pending.read_text())]
        except (ValueError, TypeError) as exc:  # not ours to fix: keep it aside, say so, go on
            pending.replace(pending.with_suffix(".unreadable"))
            log.error("broker-loss report unreadable, kept aside", extra={"error": str(exc)})
            return
        producer = RecordProducer(self.kafka.bootstrap_servers, kafka_python_security(self.kafka))
        for letter in letters:
            producer.send(self.kafka.topics.deadletter, -1, self.service.encode(), letter.encode())
        producer.close()
        pending.unlink()
        self.stats.counters["broker_state_lost"] += 1
        log.warning("reported the broker's loss of state", extra={"dead_letters": len(letters)})


def serve_health(state: HealthState, host: str, port: int) -> ThreadingHTTPServer:
    """GET /livez and /readyz: 200 or 503 with the reason as JSON, from a thread of its own."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            probes = {"/livez": state.liveness, "/readyz": state.readiness}
            probe = probes.get(self.path.split("?")[0])
            if probe is None:
                self.send_error(404, "GET /livez or /readyz")
                return
            ok, reason = probe()
            body = json.dumps({"ok": ok, "reason": reason}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health endpoints", extra={"url": f"http://{host}:{server.server_address[1]}/readyz"})
    return server


async def beat(state: HealthState, interval_s: float = 1.0) -> None:
    """The event loop's heartbeat for liveness: it stops when the loop is blocked."""
    while True:
        state.beat()
        await asyncio.sleep(interval_s)


def start_watch(service: str, settings: CommonSettings, stats: StatsCounter, topic_ids: dict[str, str]) -> BrokerWatch:
    """The watch on the service's input topics (from the registry) and, when a port is set, its HTTP endpoints;
    `topic_ids` are the ids `ensure_topics` found at the start. The caller runs `beat(watch.state)` on its loop."""
    inputs = [getattr(settings.kafka.topics, topic) for topic in registered(service).inputs]
    watch = BrokerWatch(service, settings.kafka, inputs, stats, settings.health, topic_ids)
    if settings.health.port is not None:
        serve_health(watch.state, settings.health.host, settings.health.port)
    watch.start()
    return watch


def watch_faust(
    app: Any, service: str, settings: CommonSettings, stats: StatsCounter, topic_ids: dict[str, str]
) -> None:
    """The watch starts with the faust worker and beats on its loop."""

    @app.task  # type: ignore[untyped-decorator]
    async def watch_broker() -> None:
        await beat(start_watch(service, settings, stats, topic_ids).state)
