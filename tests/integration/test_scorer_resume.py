"""The scorer's per-unit state (streams, settle, debounce) lives in a faust table: after `kill -9` and a restart,
every unit that was running is scored again from its first samples, mills included, whose settle time after a
start-up is 20 minutes (with state in memory only, they were blind that long)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import simulate

from linewatch.core.contract import scores_decoder
from linewatch.core.kafka import TopicReader
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.scorer import registry, training
from linewatch.services.simulator.runner import RunPlan
from linewatch.simulation.plant_sim import simulated
from linewatch.tools.devstack import DevStack
from linewatch.tools.launcher import ServiceProcess

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
KEY = "resume-test-key"
CLASSES = ("planetary_mill", "dry_room", "laminator")


def test_after_kill_9_every_running_unit_is_scored_again_within_10_s(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    start = math.floor(time.time() / 7200) * 7200 - 10 * 86400
    frames = (f for f in simulated(plant, start, 3, seed=1) if f.equipment_class in CLASSES)
    models, _ = training.fit(plant, training.collect(plant, frames), contexts="pooled")
    root.mkdir()
    registry.point(root, "ACTIVE", registry.save(root, KEY.encode(), models, {"source": "test"}))
    env = stack.service_env() | {"LINEWATCH_REGISTRY": str(root), "LINEWATCH_MODEL_SIGNING_KEY": KEY}
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "scorer")]
    scorer = services[1]
    reader = TopicReader(kafka, kafka.topics.scores)
    last_scored: dict[str, float] = {}  # unit -> the last sample time scored
    resumed: dict[str, tuple[float, float]] = {}  # unit -> first sample scored after the restart, wall time
    resumed_from = float("inf")

    def read(timeout_s: float) -> None:
        def keep(value: bytes) -> None:
            scores = scores_decoder.decode(value)
            if scores.equipment_class not in CLASSES:
                return
            unit, first = scores.equipment_id, scores.samples[0].ts.timestamp()
            last_scored[unit] = max(last_scored.get(unit, 0.0), scores.samples[-1].ts.timestamp())
            if first >= resumed_from and unit not in resumed:
                resumed[unit] = (first, time.monotonic())

        reader.read(keep, timeout_s)

    def scored_until(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
            read(0.5)

    try:
        # A lot boundary two lots ago: the mills start a recipe, settle for 20 min, then are scored.
        begin = (int(time.time()) // 7200 - 2) * 7200
        simulate(plant, kafka.bootstrap_servers, RunPlan(begin, 2400, 100, None, seed=5))
        mills = [e.id for e in plant.equipment if e.equipment_class == "planetary_mill"]
        scored_until("mills scored after their settle", lambda: set(mills) <= set(last_scored), 180)
        scored_until("the first part scored", lambda: min(last_scored.values()) >= begin + 2300, 120)
        running = sorted(last_scored)
        scorer.kill()
        resumed_from = begin + 2400
        simulate(plant, kafka.bootstrap_servers, RunPlan(resumed_from, 600, 100, None, seed=5))
        restarted = time.monotonic()
        scorer.start()
        scored_until("every unit that was running scored again", lambda: set(running) <= set(resumed), 120)
    finally:
        reader.close()
        for service in services:
            service.stop()
    # Every unit is scored again within its first frames after the restart, in data time: no new settle time (20 min
    # for a mill). Tansu reports changelog end offsets short (platform notes), so faust's table recovery may stop a
    # few records early and a unit resume from a slightly older state: a frame or two of warm-up (plus the sample or
    # two its rates and lags need), fewer than three 100-sample frames, never a settle.
    # In wall time the restart costs the consumer group's rejoin, which waits out the killed worker's session.
    blind = {unit: resumed[unit][0] - resumed_from for unit in running}
    assert max(blind.values()) < 3 * 100 * plant.sample_period_s, blind
    assert set(mills) <= set(running)
    wall = {unit: round(resumed[unit][1] - restarted, 1) for unit in running}
    assert max(wall.values()) <= 60.0, wall
    logging.getLogger(__name__).info("scored again after the restart: %.1f s wall time", max(wall.values()))
    log = (tmp_path / "scorer.log").read_text()
    assert "Traceback" not in log
