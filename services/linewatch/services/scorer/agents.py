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
    seen_before,
    telemetry_decoder,
)
from linewatch.core.kafka import source_of
from linewatch.core.plant import PlantModel
from linewatch.core.stats import StatsCounter
from linewatch.core.streams import dead_letter_event, publish_stats, send_acknowledged, store_batch, take_batches
from linewatch.services.scorer.engine import PlantScorer, Prepared, UnitState, unit_decoder, unit_encoder
from linewatch.services.scorer.models import ClassModel
from linewatch.services.scorer.rollout import ModelSet
from linewatch.services.scorer.settings import ScorerSettings

SERVICE = "scorer"
log = logging.getLogger(__name__)


# A batch is what arrived within 10 ms, up to 500 frames: one detection call per model for all of them (a call
# costs ~150 us of numpy dispatch whatever the rows, since the forest is walked for all its trees at once). In a
# live stream a batch holds a few frames, so calls are about one a frame whatever the window; 10 ms, as the
# validator and the alerter wait, is what it adds to a frame's latency.
BATCH_FRAMES = 500
BATCH_WITHIN_S = 0.01


def scores_for(engine: PlantScorer, models: ModelSet, frames: list[TelemetryFrame]) -> list[list[AnomalyScores]]:
    """Each frame's scores by the active model (and the shadow beside it), in the frames' order; the units'
    streams advance frame by frame, the detection runs once per model for the lot."""
    roles = (("active", models.active), ("shadow", models.candidate))
    results: list[list[AnomalyScores]] = [[] for _ in frames]
    pending: dict[tuple[str, int], tuple[ClassModel, str, list[tuple[int, Prepared]]]] = {}
    waiting: set[str] = set()  # units with frames in `pending`

    def flush() -> None:
        for (role, _), (model, version, items) in pending.items():
            scored = engine.score_many([(frames[index], prepared) for index, prepared in items], model, role)
            for (index, _), samples in zip(items, scored, strict=True):
                if samples:
                    results[index].append(
                        AnomalyScores(
                            **equipment_fields(frames[index]),
                            schema_version=SCORES_SCHEMA_VERSION,
                            model_version=version,
                            role=role,  # type: ignore[arg-type]
                            samples=samples,
                            lot_id=frames[index].lot_id,
                        )
                    )
        pending.clear()
        waiting.clear()

    for index, frame in enumerate(frames):
        if frame.state != "running" and frame.equipment_id in waiting:
            flush()  # a stop clears the unit's debounce: its earlier frames are decided first
        prepared = engine.prepare(frame)
        if prepared is None:
            continue
        for role, loaded in roles:
            model = loaded.model_for(frame.equipment_class, frame.recipe)
            if model is None or loaded.version is None:
                continue
            engine.advance(frame.equipment_id, prepared, [model])
            pending.setdefault((role, id(model)), (model, loaded.version, []))[2].append((index, prepared))
            waiting.add(frame.equipment_id)
    flush()
    return results


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

    def stored_state(key: bytes) -> UnitState:
        stored = units.get(key)
        return unit_decoder.decode(stored) if stored else UnitState()

    async def dead_letter(event: Any, exc: Exception) -> None:
        # An exception would make faust skip the frame and commit past it: dead-letter it instead.
        reason = "invalid_frame" if isinstance(exc, msgspec.MsgspecError) else "internal_error"
        log.error("scoring failed", extra=structs.asdict(source_of(event.message)) | {"error": repr(exc)})
        await dead_letter_event(deadletter_topic, event, SERVICE, reason, f"{type(exc).__name__}: {exc}")
        stats.counters["dead_letters"] += 1

    @app.agent(valid_topic, name="score")  # type: ignore[untyped-decorator]
    async def score(stream: Any) -> None:
        async for events in take_batches(stream, BATCH_FRAMES, BATCH_WITHIN_S):
            stats.took(topics.valid, len(events))
            taken: list[tuple[Any, TelemetryFrame]] = []
            touched: dict[bytes, UnitState] = {}
            skipped: list[tuple[str, str, int, int]] = []  # reason, unit, partition, offset
            for event in events:
                message = event.message
                try:
                    frame = telemetry_decoder.decode(event.value or b"")
                    key = frame.equipment_id.encode()
                    if key not in touched:
                        touched[key] = stored_state(key)
                except Exception as exc:
                    await dead_letter(event, exc)
                    continue
                if touched[key].applied.get(f"{message.topic}:{message.partition}", -1) >= message.offset:
                    stats.counters["redelivered_skipped"] += 1  # scored before a restart; its scores are out
                    skipped.append(("redelivered", frame.equipment_id, message.partition, message.offset))
                    continue
                if seen_before(touched[key].recent_frames, frame):
                    # A copy at a new offset (the validator restarted): scored again it would replay an older
                    # equipment state into the unit's streams and settle time.
                    stats.counters["frame_copies_skipped"] += 1
                    skipped.append(("copy", frame.equipment_id, message.partition, message.offset))
                    continue
                engine.units[frame.equipment_id] = touched[key]
                taken.append((event, frame))
            if skipped:
                # Only after a restart or a rebalance; which frames, so a missing stretch can be traced to them.
                log.info("frames skipped", extra={"frames": len(skipped), "first": skipped[0], "last": skipped[-1]})
            try:
                results = scores_for(engine, models, [frame for _, frame in taken])
            except Exception:
                # One bad frame must not cost the others: score them one by one and dead-letter the culprit, from
                # the units' states as stored (the failed batch may have advanced some of them).
                for key in touched:
                    touched[key] = engine.units[key.decode()] = stored_state(key)
                for _, frame in taken:
                    seen_before(touched[frame.equipment_id.encode()].recent_frames, frame)  # as remembered above
                results = []
                for event, frame in taken:
                    try:
                        results.append(scores_for(engine, models, [frame])[0])
                    except Exception as exc:
                        await dead_letter(event, exc)
                        results.append([])
            # Acknowledged by Kafka before the state says so: a crash in between repeats scores, never loses them.
            await send_acknowledged(
                scores_topic,
                [
                    (frame.equipment_id.encode(), encoder.encode(result))
                    for (_, frame), frame_results in zip(taken, results, strict=True)
                    for result in frame_results
                ],
            )
            last_event: dict[bytes, Any] = {}
            for (event, frame), frame_results in zip(taken, results, strict=True):
                for result in frame_results:
                    stats.counters[f"samples_scored.{result.role}"] += len(result.samples)
                    if result.role == "active":
                        stats.counters["samples_scored"] += len(result.samples)
                        stats.counters["samples_anomalous"] += sum(s.anomalous for s in result.samples)
                message, key = event.message, frame.equipment_id.encode()
                touched[key].applied[f"{message.topic}:{message.partition}"] = message.offset
                last_event[key] = event
            store_batch(stream, units, last_event, {key: unit_encoder.encode(touched[key]) for key in last_event})

    @app.timer(interval=settings.reload_interval_s)  # type: ignore[untyped-decorator]
    async def reload_models() -> None:
        # Verifying and loading a version takes seconds: off the event loop, swapped in when complete.
        await asyncio.to_thread(models.refresh)
        stats.counters["model_load_failures"] = models.failures

    publish_stats(app, topics.stats, stats, settings.stats_interval_s)

    return stats
