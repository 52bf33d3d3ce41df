"""Recordings of Kafka topics: self-describing, gzip-compressed JSON lines (a header, then one line per
message with its topic, partition, offset, key, headers, timestamp and value), recorded live or from the
start, and replayed into a sandbox at 1x, Nx or maximum speed with per-partition order and scaled gaps."""

from __future__ import annotations

import gzip
import heapq
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from linewatch.core.commandline import UsageError
from linewatch.core.contract import (
    ALARM_SCHEMA_VERSION,
    DEADLETTER_SCHEMA_VERSION,
    LOT_SCHEMA_VERSION,
    SCORES_SCHEMA_VERSION,
    TELEMETRY_SCHEMA_VERSION,
)
from linewatch.core.kafka import OBSERVER_FETCH_MAX_WAIT_MS, kafka_python_security
from linewatch.core.settings import KafkaSettings, Topics
from linewatch.services.validator.settings import ValidatorSettings

REPLAY_HEADER = "linewatch.replay_id"


class RecordingHeader(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["linewatch-recording"]
    version: Literal[1]
    created_at: datetime
    source: str  # bootstrap servers, or the file/database an import came from
    topics: list[str]
    schema_versions: dict[str, int]  # message type -> the contract version current when recorded
    note: str = ""


class RecordedMessage(msgspec.Struct, forbid_unknown_fields=True, array_like=True):
    """One Kafka record as it was: bytes fields are base64 in the file."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = []


_encoder = msgspec.json.Encoder()
_header_decoder = msgspec.json.Decoder(RecordingHeader)
_message_decoder = msgspec.json.Decoder(RecordedMessage)


def contract_versions() -> dict[str, int]:
    return {
        "telemetry-frame": TELEMETRY_SCHEMA_VERSION,
        "deadletter": DEADLETTER_SCHEMA_VERSION,
        "anomaly-scores": SCORES_SCHEMA_VERSION,
        "alarm-event": ALARM_SCHEMA_VERSION,
        "lot-event": LOT_SCHEMA_VERSION,
    }


class RecordingWriter:
    def __init__(self, path: Path, source: str, topics: list[str], note: str = "") -> None:
        self.path = path
        self.count = 0
        self._file = gzip.GzipFile(path, "wb", compresslevel=6)
        header = RecordingHeader("linewatch-recording", 1, datetime.now(UTC), source, topics, contract_versions(), note)
        self._file.write(_encoder.encode(header) + b"\n")

    def write(self, message: RecordedMessage) -> None:
        self._file.write(_encoder.encode(message) + b"\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, failed: type[BaseException] | None, *_: object) -> None:
        self.close()
        if failed is not None and self.count == 0:
            self.path.unlink(missing_ok=True)  # a recording that failed before its first message holds nothing


def read_header(path: Path) -> RecordingHeader:
    with gzip.open(path, "rb") as handle:
        return _header_decoder.decode(handle.readline())


def read_messages(path: Path) -> Iterator[RecordedMessage]:
    with gzip.open(path, "rb") as handle:
        _header_decoder.decode(handle.readline())  # refuses anything that is not a recording
        for line in handle:
            if line.strip():
                yield _message_decoder.decode(line)


def in_time_order(messages: Iterable[RecordedMessage]) -> list[RecordedMessage]:
    """Merge the partitions by timestamp, each partition kept in offset order (so per-key order holds)."""
    by_partition: dict[tuple[str, int], list[RecordedMessage]] = {}
    for message in messages:
        by_partition.setdefault((message.topic, message.partition), []).append(message)
    runs = [sorted(run, key=lambda m: m.offset) for run in by_partition.values()]
    return list(heapq.merge(*runs, key=lambda m: m.timestamp_ms))


# -- record -------------------------------------------------------------------------------------------------


@dataclass
class RecordPlan:
    topics: list[str]
    from_start: bool = False  # else live: what arrives from now on
    since: datetime | None = None
    until: datetime | None = None
    for_s: float | None = None  # wall-clock limit
    idle_s: float | None = None  # stop after this long without a new record


def record(
    settings: KafkaSettings,
    plan: RecordPlan,
    writer: RecordingWriter,
    stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int], None] = lambda _: None,
) -> int:
    """Consume the topics into the recording until a limit is reached; returns the messages written."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=OBSERVER_FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=8 << 20,
        **kafka_python_security(settings),
    )
    found = {topic: sorted(consumer.partitions_for_topic(topic) or []) for topic in plan.topics}
    missing = [topic for topic, numbers in found.items() if not numbers]
    if missing:  # recording it would take nothing and say nothing
        consumer.close()
        raise UsageError(
            f"the broker at {settings.bootstrap_servers} has no topic {', '.join(missing)}: check the name (the "
            "services' topics are in the settings, LINEWATCH_KAFKA__TOPICS__*), or start the services first: they "
            "create their topics"
        )
    partitions = [TopicPartition(topic, number) for topic, numbers in found.items() for number in numbers]
    consumer.assign(partitions)
    if plan.from_start or plan.since is not None:
        consumer.seek_to_beginning(*partitions)
    else:
        # Live: from the end offsets at start, not from "records stamped from now on": producers may stamp
        # records with event time (the simulator does), which can lie in the past. On Tansu the end offset can
        # fall inside the last batch (platform notes), so a few earlier records may come along; none are missed.
        for partition, end in consumer.end_offsets(partitions).items():
            consumer.seek(partition, end)
    since_ms = int(plan.since.timestamp() * 1000) if plan.since else None
    until_ms = int(plan.until.timestamp() * 1000) if plan.until else None
    wall_start = last_seen = time.monotonic()
    try:
        while not stop():
            now = time.monotonic()
            if plan.for_s is not None and now - wall_start >= plan.for_s:
                break
            if plan.idle_s is not None and now - last_seen >= plan.idle_s:
                break
            batches = consumer.poll(timeout_ms=200)
            for records in batches.values():
                last_seen = time.monotonic()
                for r in records:
                    if (since_ms is not None and r.timestamp < since_ms) or (
                        until_ms is not None and r.timestamp > until_ms
                    ):
                        continue
                    headers = [(k, v) for k, v in (r.headers or [])]
                    writer.write(RecordedMessage(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, headers))
            on_progress(writer.count)
    finally:
        consumer.close()
    return writer.count


# -- replay -------------------------------------------------------------------------------------------------


def sandbox_topics(replay_id: str) -> Topics:
    return Topics().prefixed(sandbox_prefix(replay_id))


def sandbox_prefix(replay_id: str) -> str:
    return f"sandbox.{replay_id}."


def sandbox_env(replay_id: str, messages: Sequence[RecordedMessage] = ()) -> dict[str, str]:
    """Service settings for a sandbox: its own topics, consumer groups and InfluxDB database, and nothing
    reaches people (no notifications, no Grafana annotations). With the recording's messages, the validator also
    takes samples as old as the recording's."""
    topics = sandbox_topics(replay_id)
    env = {f"LINEWATCH_KAFKA__TOPICS__{name.upper()}": topic for name, topic in topics.model_dump().items()}
    if messages:
        env["LINEWATCH_MAX_PAST_S"] = f"{replay_past_s(messages):.0f}"
    return env | {
        "LINEWATCH_KAFKA__GROUP_PREFIX": sandbox_prefix(replay_id),
        "LINEWATCH_INFLUX__DATABASE": sandbox_database(replay_id),
        "LINEWATCH_INFLUX__BUCKET": sandbox_database(replay_id),
        "LINEWATCH_NOTIFY__ENABLED": "false",
        "LINEWATCH_GRAFANA__URL": "",
    }


# The live validator's window for old samples (LINEWATCH_MAX_PAST_S, its default): a recording's samples may be that
# much older than their record's timestamp.
LIVE_PAST_S: float = ValidatorSettings.model_fields["max_past_s"].default


def replay_past_s(messages: Sequence[RecordedMessage]) -> float:
    """How old a sample a sandbox's validator must take: a replay of last month's incident is not "too old". Its
    oldest record's age now, plus the recording's span (its age when a replay at 1x or faster ends), plus the live
    window."""
    first = min(m.timestamp_ms for m in messages) / 1000
    last = max(m.timestamp_ms for m in messages) / 1000
    return max(time.time() - first, 0.0) + (last - first) + LIVE_PAST_S


def sandbox_database(replay_id: str) -> str:
    return f"linewatch_sandbox_{replay_id.replace('-', '_')}"


@dataclass
class ReplayPlan:
    speed: float | None  # None: as fast as possible
    replay_id: str
    topic_map: Callable[[str], str]


def replay(
    messages: list[RecordedMessage],
    plan: ReplayPlan,
    send: Callable[[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]], None],
    on_progress: Callable[[int], None] = lambda _: None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send `messages` (already in time order) with their gaps scaled by 1/speed; each carries the replay id."""
    if not messages:
        return 0
    first_ms = messages[0].timestamp_ms
    wall_start = time.monotonic()
    tag = (REPLAY_HEADER, plan.replay_id.encode())
    for index, message in enumerate(messages):
        if stop():
            return index
        if plan.speed is not None:
            ahead = (message.timestamp_ms - first_ms) / 1000 / plan.speed - (time.monotonic() - wall_start)
            if ahead > 0:
                time.sleep(ahead)
        headers = [h for h in message.headers if h[0] != REPLAY_HEADER] + [tag]
        send(plan.topic_map(message.topic), message.partition, message.key, message.value, headers)
        if index % 500 == 0:
            on_progress(index)
    on_progress(len(messages))
    return len(messages)
