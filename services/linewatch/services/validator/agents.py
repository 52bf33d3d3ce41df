"""The validate agent: every raw message leaves as valid frame, dead letters, or both; never nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from msgspec import structs

from linewatch.core.kafka import source_of
from linewatch.core.stats import StatsCounter
from linewatch.core.streams import dead_letter_event, publish_stats, send_acknowledged, take_batches
from linewatch.services.validator.checks import FrameValidator, Outcome, Rejection
from linewatch.services.validator.settings import ValidatorSettings

SERVICE = "validator"
BATCH_RECORDS = 1000
BATCH_WITHIN_S = 0.01
log = logging.getLogger(__name__)


def register(app: Any, settings: ValidatorSettings, validator: FrameValidator) -> StatsCounter:
    topics = settings.kafka.topics
    raw_topic = app.topic(topics.raw)
    valid_topic = app.topic(topics.valid)
    deadletter_topic = app.topic(topics.deadletter)
    stats = StatsCounter(SERVICE)

    @app.agent(raw_topic, name="validate")  # type: ignore[untyped-decorator]
    async def validate(stream: Any) -> None:
        # What arrived within 10 ms: its frames are sent together and their acknowledgements awaited once (faust
        # commits the batch after that), rather than one round of the event loop per send.
        async for events in take_batches(stream, BATCH_RECORDS, BATCH_WITHIN_S):
            valid: list[tuple[bytes | None, bytes]] = []
            stats.took(topics.raw, len(events))
            samples_valid = 0
            for event in events:
                payload: bytes = event.value if event.value is not None else b""
                key: bytes | None = event.key
                try:
                    outcome = validator.validate(payload, datetime.now(UTC))
                except Exception as exc:
                    # A bug here must not skip the message (faust would commit past it): dead-letter it.
                    log.exception("validation failed", extra=structs.asdict(source_of(event.message)))
                    outcome = Outcome(rejections=[Rejection("internal_error", f"{type(exc).__name__}: {exc}")])
                if outcome.valid is not None and outcome.equipment_id is not None:
                    # Keyed by the equipment the frame is about, whatever key it came with: a unit's frames share
                    # a partition, so its state (scorer, alerter) sees them in order.
                    unit = outcome.equipment_id.encode()
                    if key != unit:
                        stats.counters["rekeyed"] += 1
                    valid.append((unit, outcome.valid))
                    samples_valid += outcome.valid_samples
                for rejection in outcome.rejections:
                    await dead_letter_event(
                        deadletter_topic, event, SERVICE, rejection.reason, rejection.detail, rejection.payload
                    )
                    stats.counters["dead_letters"] += 1
                    stats.counters[f"dead_letters.{rejection.reason}"] += 1
            # Counted a batch at a time: the live view reads them every few seconds.
            stats.counters["samples_valid"] += samples_valid
            stats.counters["messages_out"] += len(valid)
            await send_acknowledged(valid_topic, valid)

    publish_stats(app, topics.stats, stats, settings.stats_interval_s)

    return stats


def build_validator(settings: ValidatorSettings, plant: Any) -> FrameValidator:
    return FrameValidator(
        plant,
        max_message_bytes=settings.max_message_bytes,
        max_future=timedelta(seconds=settings.max_future_s),
        max_past=timedelta(seconds=settings.max_past_s),
    )
