"""Detection quality of the anomaly models on runs they never saw (in-process; minutes, not a unit test)."""

from __future__ import annotations

import math

import pytest

from linewatch.core.plant import PlantModel
from linewatch.services.scorer import evaluate, training
from linewatch.simulation.faults import fault_catalogue_schedule
from linewatch.simulation.plant_sim import simulated

START = math.floor(1_790_000_000 / 7200) * 7200  # fixed: runs are reproducible

pytestmark = [pytest.mark.detection, pytest.mark.slow]


def test_detection_quality_on_unseen_runs(plant: PlantModel) -> None:
    """Every fault type once on a run the model never saw, plus a normal run; fixed seeds and times."""
    models = training.fit(plant, training.collect(plant, simulated(plant, START, 8, seed=1)))
    report = evaluate.Report()
    start = START + 5 * 86400
    injections = fault_catalogue_schedule(plant, start, 6, seed=77, per_type=1)
    labels = [evaluate.Label(i.fault_name, i.equipment_id, i.start_s, i.end_s) for i in injections]
    report.add_run(plant, evaluate.score_stream(plant, simulated(plant, start, 6, 77, injections), models), labels, 6)
    report.add_run(plant, evaluate.score_stream(plant, simulated(plant, start + 86400, 6, 78), models), [], 6)
    summary = report.summary()
    assert len(report.faults) == len(plant.faults)
    assert summary["detected_pct"] >= 90, report.table()
    assert summary["median_delay_s"] <= 60, report.table()
    assert summary["false_alerts_per_8h"] <= 1.0
