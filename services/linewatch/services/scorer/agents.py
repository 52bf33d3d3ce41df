"""The score agent: valid frames in, anomaly scores out (active model, plus shadow when a candidate is set)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from msgspec import structs

from linewatch.core.contract import (
    SCORES_SCHEMA_VERSION,
    AnomalyScores,
    TelemetryFrame,
    encoder,
    equipment_fields,
    telemetry_decoder,
)
from linewatch.core.kafka import dead_letter_event, publish_stats, source_of
from linewatch.core.plant import PlantModel
from linewatch.core.stats import StatsCounter
from linewatch.services.scorer.engine import PlantScorer, UnitState, unit_decoder, unit_encoder
from linewatch.services.scorer.models import pick
from linewatch.services.scorer.rollout import ModelSet
from linewatch.services.scorer.settings import ScorerSettings

SERVICE = "scorer"
log = logging.getLogger(__name__)


def scores_for(engine: PlantScorer, models: ModelSet, frame: TelemetryFrame) -> list[AnomalyScores]:
    prepared = engine.prepare(frame)
    if prepared is None:
        return []
    chosen = [
        (role, loaded.version, pick(loaded.models, frame.equipment_class, frame.recipe))
        for role, loaded in (("active", models.active), ("shadow", models.candidate))
        if loaded.version is not None
    ]
    out = []
    for role, version, model in chosen:
        if model is None or version is None:
            continue
        samples = engine.score(frame, prepared, model, role)
        if samples:
            out.append(
                AnomalyScores(
                    **equipment_fields(frame),
                    schema_version=SCORES_SCHEMA_VERSION,
                    model_version=version,
                    role=role,  # type: ignore[arg-type]
                    samples=samples,
                    lot_id=frame.lot_id,
                )
            )
    return out


def register(app: Any, settings: ScorerSettings, plant: PlantModel, models: ModelSet) -> StatsCounter:
    topics = settings.kafka.topics
    valid_topic = app.topic(topics.valid)
    scores_topic = app.topic(topics.scores)
    deadletter_topic = app.topic(topics.deadletter)
    stats = StatsCounter(SERVICE)
    engine = PlantScorer(plant)
    # Each unit's streams (features, settle, debounce) in a table keyed by equipment id, co-partitioned with the
    # valid topic: after a restart or a rebalance scoring resumes where it was, not after a new settle time.
    units = app.Table("scorer-state", partitions=settings.kafka.partitions, key_type=bytes, value_type=bytes)

    @app.agent(valid_topic, name="score")  # type: ignore[untyped-decorator]
    async def score(stream: Any) -> None:
        async for event in stream.events():
            payload, message = event.value or b"", event.message
            position = f"{message.topic}:{message.partition}"
            stats.took(topics.valid)
            try:
                frame = telemetry_decoder.decode(payload)
                stored = units.get(frame.equipment_id.encode())
                unit = unit_decoder.decode(stored) if stored else UnitState()
                if unit.applied.get(position, -1) >= message.offset:
                    stats.counters["redelivered_skipped"] += 1  # scored before a restart; its scores are out
                    continue
                engine.units[frame.equipment_id] = unit
                results = scores_for(engine, models, frame)
            except Exception as exc:
                # An exception would make faust skip the frame and commit past it: dead-letter it instead.
                reason = "invalid_frame" if isinstance(exc, msgspec.MsgspecError) else "internal_error"
                log.exception("scoring failed", extra=structs.asdict(source_of(event.message)))
                await dead_letter_event(deadletter_topic, event, SERVICE, reason, f"{type(exc).__name__}: {exc}")
                stats.counters["dead_letters"] += 1
                continue
            # Acknowledged by Kafka before the state says so: a crash in between repeats scores, never loses them.
            key = frame.equipment_id.encode()
            pending = [await scores_topic.send(key=key, value=encoder.encode(result)) for result in results]
            await asyncio.gather(*pending)
            for result in results:
                stats.counters[f"samples_scored.{result.role}"] += len(result.samples)
                if result.role == "active":
                    stats.counters["samples_scored"] += len(result.samples)
                    stats.counters["samples_anomalous"] += sum(s.anomalous for s in result.samples)
            unit.applied[position] = message.offset
            units[key] = unit_encoder.encode(unit)

    @app.timer(interval=settings.reload_interval_s)  # type: ignore[untyped-decorator]
    async def reload_models() -> None:
        # Verifying and loading a version takes seconds: off the event loop, swapped in when complete.
        await asyncio.to_thread(models.refresh)
        stats.counters["model_load_failures"] = models.failures

    publish_stats(app, topics.stats, stats, settings.stats_interval_s)

    return stats
