"""End to end on the real broker and influxd: simulator -> Kafka -> validator -> writer -> InfluxDB."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path

from support import SimulatorThread, per_sensor_mismatches, read_dead_letters, start_services, total, wait_for_counts

from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.simulator.runner import RunPlan
from linewatch.tools.devstack import DevStack

log = logging.getLogger(__name__)


def test_100k_samples_with_1pct_malformed_land_exactly_once(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, log_dir: Path
) -> None:
    samples = 100_000
    duration = math.ceil(samples / len(plant.equipment)) * plant.sample_period_s
    plan = RunPlan(
        start_s=math.floor(time.time() - duration - 60),
        duration_s=duration,
        frame_samples=10,
        speed=None,
        malformed_share=0.01,
        seed=11,
    )
    services = start_services(stack, log_dir, "validator", "writer")
    try:
        simulator = SimulatorThread(plant, kafka.bootstrap_servers, plan)
        simulator.start()
        manifest = simulator.result()
        assert manifest.samples_sent >= samples
        malformed_share = len(manifest.malformed) / manifest.frames
        assert 0.005 < malformed_share < 0.02
        assert {m.kind for m in manifest.malformed} >= {"invalid_json", "schema_violation", "unknown_equipment"}

        stored = wait_for_counts(
            stack.influxd, manifest.expected_values, timeout_s=180, alive=lambda: all(s.alive() for s in services)
        )
        assert per_sensor_mismatches(manifest.expected_values, stored) == []
        assert total(stored) == total(manifest.expected_values)

        letters = read_dead_letters(kafka, len(manifest.malformed))
        got = Counter((letter.source_sha256, letter.reason, letter.source.key) for letter in letters)
        want = Counter((m.sha256, m.kind, m.equipment_id) for m in manifest.malformed)
        assert got == want
        for letter in letters:
            assert letter.stage == "validator"
            assert letter.source.topic == kafka.topics.raw
            assert letter.source.offset >= 0
            assert letter.detail
        log.info(
            "pipeline test figures",
            extra={
                "samples_sent": manifest.samples_sent,
                "valid_samples": manifest.valid_samples,
                "values_stored": total(stored),
                "malformed": len(manifest.malformed),
                "dead_letters": len(letters),
                "kinds": dict(Counter(m.kind for m in manifest.malformed)),
            },
        )
    finally:
        for service in services:
            service.stop()
