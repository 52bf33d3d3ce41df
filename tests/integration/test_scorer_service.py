"""The scorer service on the real broker and influxd: scores land in InfluxDB, a fault is flagged, a
candidate model is shadowed without a restart, and a tampered model is refused while scoring goes on."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from support import simulate

from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.scorer import registry, training
from linewatch.services.simulator.runner import RunPlan
from linewatch.simulation.faults import plan_injection
from linewatch.simulation.plant_sim import simulated
from linewatch.tools.devstack import DevStack, wait_until
from linewatch.tools.launcher import ServiceProcess

KEY = "service-test-key"


def anomaly_counts(stack: DevStack, where: str) -> dict[str, int]:
    result = stack.influxd.query(f"SELECT count(score) FROM anomaly WHERE {where} GROUP BY equipment", "linewatch")
    return {s["tags"]["equipment"]: int(s["values"][0][1]) for s in result["results"][0].get("series", [])}  # type: ignore[index]


def test_scorer_service_end_to_end(stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    start = math.floor(time.time() / 7200) * 7200 - 10 * 86400
    models, _ = training.fit(plant, training.collect(plant, simulated(plant, start, 4, seed=1)))
    good = registry.save(root, KEY.encode(), models, {"source": "test"})
    registry.point(root, "ACTIVE", good)

    env = stack.service_env() | {
        "LINEWATCH_REGISTRY": str(root),
        "LINEWATCH_MODEL_SIGNING_KEY": KEY,
        "LINEWATCH_RELOAD_INTERVAL_S": "0.5",
    }
    services = [
        ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "scorer", "writer")
    ]
    try:
        run_start = math.floor(time.time()) - 2400
        fault = plan_injection(plant, "sensor_dropout", "C1-COAT-01", run_start + 600, np.random.default_rng(1))
        plan = RunPlan(start_s=run_start, duration_s=1200, frame_samples=20, speed=None, seed=5, injections=[fault])
        simulate(plant, kafka.bootstrap_servers, plan)
        wait_until("active scores in InfluxDB", lambda: len(anomaly_counts(stack, "role = 'active'")) >= 20, 120, 0.5)
        wait_until(
            "the dropout is flagged",
            lambda: (
                anomaly_counts(stack, "role = 'active' AND anomalous = true AND equipment = 'C1-COAT-01'").get(
                    "C1-COAT-01", 0
                )
                >= 300
            ),
            120,
            0.5,
        )
        flagged = stack.influxd.query(
            "SELECT first(missing) FROM anomaly WHERE anomalous = true AND equipment = 'C1-COAT-01'", "linewatch"
        )
        assert flagged["results"][0]["series"][0]["values"][0][1] == fault.sensor  # type: ignore[index]
        # False-alarm rates are measured by the evaluation; here: the faulted unit is quiet before its fault
        # and the short, lightly trained model raises alarms on well under 1 % of the other samples.
        before_fault = f"role = 'active' AND time < {int(run_start + 590)}s"
        early = anomaly_counts(stack, f"{before_fault} AND anomalous = true")
        assert early.get("C1-COAT-01", 0) == 0
        assert sum(early.values()) < 0.005 * sum(anomaly_counts(stack, before_fault).values()), early

        candidate = registry.save(root, KEY.encode(), models, {"source": "candidate"})
        registry.point(root, "CANDIDATE", candidate)
        # Loading a version takes seconds on a busy machine: the next frames are sent once it is in use.
        scorer_log = tmp_path / "scorer.log"
        wait_until(
            "the candidate loaded",
            lambda: f'"role": "CANDIDATE", "version": "{candidate}"' in scorer_log.read_text(),
            60,
            0.2,
        )
        plan2 = RunPlan(start_s=run_start + 1200, duration_s=300, frame_samples=20, speed=None, seed=6)
        simulate(plant, kafka.bootstrap_servers, plan2)
        wait_until("shadow scores", lambda: len(anomaly_counts(stack, "role = 'shadow'")) >= 20, 120, 0.5)

        tampered = registry.save(root, KEY.encode(), models, {"source": "tampered"})
        (root / tampered / "signature").write_text("0" * 64)
        registry.point(root, "ACTIVE", tampered)
        wait_until(
            "the tampered version refused", lambda: "signature does not match" in scorer_log.read_text(), 60, 0.2
        )
        plan3 = RunPlan(start_s=run_start + 1500, duration_s=300, frame_samples=20, speed=None, seed=7)
        simulate(plant, kafka.bootstrap_servers, plan3)
        recent = f"role = 'active' AND time >= {int(run_start + 1500)}s"
        wait_until(
            "scoring goes on with the last good model",
            lambda: sum(anomaly_counts(stack, recent).values()) > 5000,
            120,
            0.5,
        )
        versions = stack.influxd.query(
            f"SELECT distinct(model_version) FROM anomaly WHERE role = 'active' AND time >= {int(run_start + 1500)}s",
            "linewatch",
        )
        assert [v[1] for v in versions["results"][0]["series"][0]["values"]] == [good]  # type: ignore[index]
        log = (tmp_path / "scorer.log").read_text()
        assert "model refused, keeping the last good one" in log and "signature does not match" in log
        assert KEY not in log
        assert all(s.alive() for s in services)
    finally:
        for service in services:
            service.stop()
