"""Kafka clients shared by services and tools: TLS and SASL options for each client library, topic creation, and
the readers and producer that tools, benchmarks and tests use. The faust side is in `streams.py`."""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from linewatch.core.contract import SourcePosition
from linewatch.core.settings import KafkaSettings

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a keyed record, as every client here places it (the default partitioner: murmur2)."""
    from kafka.partitioner.default import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


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


# Observers (live view, benchmarks, drills, recordings, tests) are not on the hot path: a long fetch wait keeps
# them from loading the broker and the machine they observe (Tansu answers a 10 ms fetch 100 times a second).
OBSERVER_FETCH_MAX_WAIT_MS = 200


def partitions_of(consumer: Any, topic: str, settings: KafkaSettings) -> list[int]:
    """The partitions the broker has for `topic` (a kafka-python or aiokafka consumer's metadata). A reader that
    took `settings.partitions` would silently miss the rest of a topic made with more: a tool on a laptop, default
    4, against the 12 of compose. A topic the broker does not know yet gets that count when it is created."""
    known = consumer.partitions_for_topic(topic)
    return sorted(known) if known else list(range(settings.partitions))


async def assign_from_start(consumer: Any, topic: str, settings: KafkaSettings) -> None:
    """A started aiokafka consumer, outside any group, given every partition of `topic` from its beginning."""
    from aiokafka import TopicPartition

    await consumer.topics()  # the broker's metadata, so that every partition the topic has is read
    partitions = [TopicPartition(topic, p) for p in partitions_of(consumer, topic, settings)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)


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
