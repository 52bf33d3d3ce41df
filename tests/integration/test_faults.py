"""Crash and outage tests: nothing lost, nothing duplicated, on the real broker and influxd."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from support import SimulatorThread, influx_counts, per_sensor_mismatches, start_services, total, wait_for_counts

from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.simulator.runner import RunPlan
from linewatch.tools.devstack import DevStack, wait_until
from linewatch.tools.launcher import ServiceProcess

log = logging.getLogger(__name__)


def paced_plan(plant: PlantModel, samples: int, wall_s: float, seed: int) -> RunPlan:
    """A run that streams `samples` over about `wall_s` seconds, all timestamps in the past."""
    duration = math.ceil(samples / len(plant.equipment)) * plant.sample_period_s
    return RunPlan(
        start_s=math.floor(time.time() - duration - 60),
        duration_s=duration,
        frame_samples=10,
        speed=duration / wall_s,
        seed=seed,
    )


def test_writer_sigkill_mid_stream_loses_and_duplicates_nothing(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, log_dir: Path
) -> None:
    simulator = SimulatorThread(plant, kafka.bootstrap_servers, paced_plan(plant, 60_000, 20.0, seed=21))
    validator, writer = start_services(stack, log_dir, "validator", "writer")
    restarted: ServiceProcess | None = None
    try:
        simulator.start()
        wait_until("the writer writes", lambda: total(influx_counts(stack.influxd)) > 20_000, 90, 0.2)
        writer.kill()
        stored_at_kill = total(influx_counts(stack.influxd))
        assert simulator.is_alive(), "the kill must happen mid-stream"
        time.sleep(2.0)
        restarted = start_services(stack, log_dir, "writer")[0]
        manifest = simulator.result()
        assert stored_at_kill < total(manifest.expected_values)

        stored = wait_for_counts(
            stack.influxd,
            manifest.expected_values,
            timeout_s=120,
            alive=lambda: validator.alive() and restarted is not None and restarted.alive(),
        )
        assert per_sensor_mismatches(manifest.expected_values, stored) == []
        log.info(
            "writer kill figures",
            extra={
                "values_expected": total(manifest.expected_values),
                "values_at_kill": stored_at_kill,
                "values_stored": total(stored),
            },
        )
    finally:
        for service in (validator, writer, restarted):
            if service is not None:
                service.stop()


def test_influxd_down_for_12s_mid_stream_loses_nothing(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, log_dir: Path
) -> None:
    simulator = SimulatorThread(plant, kafka.bootstrap_servers, paced_plan(plant, 60_000, 25.0, seed=31))
    services = start_services(stack, log_dir, "validator", "writer")
    try:
        simulator.start()
        wait_until("the writer writes", lambda: total(influx_counts(stack.influxd)) > 10_000, 90, 0.2)
        stack.influxd.stop(kill=True)
        down_at = time.monotonic()
        time.sleep(12.0)
        assert simulator.is_alive(), "the outage must happen mid-stream"
        stack.influxd.start()
        outage_s = time.monotonic() - down_at
        manifest = simulator.result()

        stored = wait_for_counts(
            stack.influxd, manifest.expected_values, timeout_s=120, alive=lambda: all(s.alive() for s in services)
        )
        assert per_sensor_mismatches(manifest.expected_values, stored) == []
        retries = (log_dir / "writer.log").read_text().count("influxdb write failed, retrying")
        assert retries > 0, "the writer must have met the outage"
        log.info(
            "influxd outage figures",
            extra={"outage_s": round(outage_s, 1), "writer_retries": retries, "values_stored": total(stored)},
        )
    finally:
        for service in services:
            service.stop()
