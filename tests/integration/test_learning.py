"""Learning mode: a fresh stack with no model and no command typed learns its first model from its own running
data, then scores and alarms."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from support import faulty_plan, simulate

from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import KafkaSettings
from linewatch.services.scorer import registry
from linewatch.tools.devstack import DevStack, wait_until
from linewatch.tools.drill import pipeline_env
from linewatch.tools.launcher import ServiceProcess

pytestmark = [pytest.mark.production]
FAULTY = "S1-FURN-01"


def test_a_fresh_stack_learns_its_first_model_then_scores_and_alarms(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    env = pipeline_env(stack, tmp_path) | {"LINEWATCH_LEARN_H": "0.5"}
    models = Path(env["LINEWATCH_REGISTRY"])
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in PIPELINE]

    def count(query: str) -> int:
        series = stack.influxd.query(query, stack.database)["results"][0].get("series", [])  # type: ignore[index]
        return int(series[0]["values"][0][1]) if series else 0

    try:
        # Forty minutes of normal running, six hours ago; nobody trains anything.
        simulate(plant, kafka.bootstrap_servers, faulty_plan(plant, 3, 2400, [], seed=1, frame_samples=60))
        learning_began = time.monotonic()
        wait_until("a model learned and activated", lambda: registry.pointed(models, "ACTIVE") is not None, 240, 1)
        learned_s = time.monotonic() - learning_began
        scorer_log = tmp_path / "scorer.log"
        wait_until("the scorer loaded it", lambda: '"model loaded"' in scorer_log.read_text(), 60, 0.5)
        [learned] = [
            json.loads(line) for line in scorer_log.read_text().splitlines() if "learned and activated" in line
        ]
        assert set(learned["models"]) == set(plant.classes), learned  # every class: all partitions were read
        assert not (models / "learning" / "frames.jsonl.gz").exists()  # the learning data is not kept

        plan = faulty_plan(plant, 1, 1800, [("furnace_overshoot", FAULTY, 600)], seed=2, frame_samples=60)
        simulate(plant, kafka.bootstrap_servers, plan)
        since = f"time >= {int(plan.start_s)}s"
        wait_until(
            "the faulty furnace flagged by the learned model",
            lambda: (
                count(f"SELECT count(score) FROM anomaly WHERE equipment = '{FAULTY}' AND anomalous = true AND {since}")
                > 0
            ),
            120,
            1,
        )
        scored = count(f"SELECT count(score) FROM anomaly WHERE role = 'active' AND {since}")
        wait_until(
            "an alarm on the faulty furnace",
            lambda: count(f"SELECT count(event_id) FROM alarm_event WHERE equipment = '{FAULTY}' AND {since}") > 0,
            60,
            1,
        )
        assert all(s.alive() for s in services)
    finally:
        for service in services:
            service.stop()
    # Before the model: nothing of the learning run was scored.
    assert count(f"SELECT count(score) FROM anomaly WHERE time < {int(plan.start_s)}s") == 0
    assert scored > 1000
    logging.getLogger(__name__).info("learning figures", extra={"learned_after_s": round(learned_s, 1)})
