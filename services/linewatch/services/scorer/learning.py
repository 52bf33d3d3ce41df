"""Learning mode: a stack started with no model learns its first one from its own running data, with no command
typed. One scorer worker (a lock file in the registry) reads the valid topic from its start, keeps the frames in
a file beside the registry until they span `learn_h` hours of sample time, then trains, signs and activates the
first model; every worker's reload timer then loads it. A restart before that starts learning again from the
topic's start, which still holds the data."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import logging
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer

from linewatch.core.contract import telemetry_decoder
from linewatch.core.kafka import aiokafka_security
from linewatch.core.plant import PlantModel
from linewatch.core.stats import StatsCounter
from linewatch.services.scorer import registry
from linewatch.services.scorer.models import Targets
from linewatch.services.scorer.settings import ScorerSettings
from linewatch.services.scorer.training import train_version
from linewatch.storage.historian import frames_file

log = logging.getLogger(__name__)


async def learn(settings: ScorerSettings, plant: PlantModel, stats: StatsCounter) -> None:
    """Never takes the worker down: a failure is logged, scoring goes on, and the next start tries again."""
    if not settings.learn_h:
        return
    try:
        await _learn(settings, plant, stats)
    except Exception as exc:  # the broker, the disk, the registry: whatever it is, the scorer keeps running
        log.error("learning mode failed; a restart tries again", extra={"error": f"{type(exc).__name__}: {exc}"})


async def _learn(settings: ScorerSettings, plant: PlantModel, stats: StatsCounter) -> None:
    if registry.pointed(settings.registry, "ACTIVE") is not None:
        return
    learning = settings.registry / "learning"
    learning.mkdir(parents=True, exist_ok=True)
    with (learning / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another scorer worker is learning the first model")
            return
        frames = learning / "frames.jsonl.gz"
        span_h = await _collect(settings, frames, stats)
        if registry.pointed(settings.registry, "ACTIVE") is not None:
            return  # someone trained one meanwhile (`linewatch train`): theirs stands
        targets = Targets(settings.false_alarm_pct / 100, settings.false_alerts_per_week)
        source = {"learned_from": settings.kafka.topics.valid, "hours": round(span_h, 2)}
        try:  # seconds to minutes of CPU: off the event loop
            version, models, refused = await asyncio.to_thread(
                train_version,
                plant,
                frames_file(frames),
                source,
                settings.registry,
                settings.signing_key(),
                ["ACTIVE"],
                targets=targets,
            )
        except ValueError as exc:  # nothing trainable (no running samples): say so, keep scoring nothing
            log.error("learning mode could not train a model", extra={"error": str(exc)})
            return
        frames.unlink(missing_ok=True)
        log.warning(
            "learned and activated the first model",
            extra={"version": version, "models": sorted(models), "refused": refused, "hours": round(span_h, 2)},
        )


async def _collect(settings: ScorerSettings, path: Path, stats: StatsCounter) -> float:
    """Valid frames, from the topic's start, into `path` until they span `learn_h` hours and every partition is
    read to its end (partitions are read unevenly: one alone can span the hours); returns the span."""
    consumer = AIOKafkaConsumer(
        settings.kafka.topics.valid,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,  # every partition, no offsets committed: learning restarts from the start
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **aiokafka_security(settings.kafka),
    )
    await consumer.start()
    first, last = float("inf"), float("-inf")
    log.info("learning mode: no model yet, learning from running data", extra={"hours": settings.learn_h})
    try:
        with gzip.open(path, "wb", compresslevel=1) as out:
            while not (last - first >= settings.learn_h * 3600 and await _caught_up(consumer)):
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                for records in batches.values():
                    for record in records:
                        try:  # the validator's output, so valid; a foreign producer's record is skipped, counted
                            frame = telemetry_decoder.decode(record.value or b"")
                        except msgspec.DecodeError:
                            stats.counters["learning_skipped"] += 1
                            continue
                        if frame.samples:
                            first = min(first, frame.samples[0].ts.timestamp())
                            last = max(last, frame.samples[-1].ts.timestamp())
                            out.write((record.value or b"") + b"\n")
                            stats.counters["learning_samples"] += len(frame.samples)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return (last - first) / 3600


async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
    partitions = list(consumer.assignment())
    ends = await consumer.end_offsets(partitions)
    return all([await consumer.position(tp) >= end for tp, end in ends.items()])
