"""The simulated plant behaves like one: correlations, lags, lots, and faults that show in the data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.runner import RunPlan, labels, write_labels
from linewatch.simulation.faults import FaultLabel, plan_injection
from linewatch.simulation.physics import EquipmentPhysics, ramp_soak
from linewatch.simulation.plant_sim import PlantSimulator, lot_id, lot_number

START = 1_790_000_000.0  # a lot boundary is not special here; tests compute their own windows


def physics(plant: PlantModel, cls: str) -> EquipmentPhysics:
    return EquipmentPhysics(plant.classes[cls], 1.0, np.random.default_rng(0), 0.0)


def test_mill_jar_temperature_follows_speed(plant: PlantModel) -> None:
    mill = physics(plant, "planetary_mill")
    t = START + np.arange(3000.0)
    slow = mill.step(t, True, "ARG-STD", {})
    fast = mill.step(t + 3000, True, "ARG-FINE", {})
    assert fast["speed"][-1] - slow["speed"][-1] == pytest.approx(100, abs=1)
    # 0.09 degC per rpm, reached through a 300 s lag.
    assert fast["jar_temp"][-1] - slow["jar_temp"][-1] == pytest.approx(9.0, abs=0.5)
    assert fast["jar_temp"][60] - slow["jar_temp"][-1] < 2.0, "the jar must heat up with a lag"
    assert fast["motor_current"][-1] > slow["motor_current"][-1]


def test_furnace_zones_lag_the_ramp_and_settle_in_the_soak(plant: PlantModel) -> None:
    furnace = physics(plant, "annealing_furnace")
    t = np.arange(0.0, 6000.0)
    values = furnace.step(t, True, "ANNEAL-550", {})
    heating = (values["setpoint"] > 200) & (np.gradient(values["setpoint"]) > 0)
    assert heating.sum() > 500
    assert np.all(values["zone3_temp"][heating] < values["setpoint"][heating] - 5)
    soak_end = int(np.argmax(ramp_soak(t, 550.0) == 550.0)) + 3000
    assert abs(values["zone3_temp"][soak_end] - 550.0) < 2.0


def alone(plant: PlantModel, equipment: str) -> PlantModel:
    """The plant with this one unit only: the same physics, a 44th of the simulation time."""
    unit = plant.equipment_by_id[equipment]
    document = plant.model_dump(by_alias=True)
    document["areas"] = [
        area
        | {
            "lines": [
                line | {"consumes_from": None, "equipment": [{"class": unit.equipment_class, "ids": [equipment]}]}
                for line in area["lines"]
                if line["name"] == unit.line
            ]
        }
        for area in document["areas"]
        if area["name"] == unit.area
    ]
    return PlantModel.model_validate(document)


def simulate(
    plant: PlantModel,
    fault: str,
    equipment: str,
    seconds: int = 3600,
    sensor_seed: int = 0,
    magnitude: float | None = None,
) -> tuple[list[TelemetryFrame], list[str], float]:
    start = math.floor(START / plant.lot_duration_s) * plant.lot_duration_s + 600
    injection = plan_injection(plant, fault, equipment, start + 600, np.random.default_rng(sensor_seed))
    if magnitude is not None:
        injection = dataclasses.replace(injection, fault=injection.fault.model_copy(update={"magnitude": magnitude}))
    sim = PlantSimulator(alone(plant, equipment), 5, [injection])
    frames = []
    for t0 in range(0, seconds, 100):
        frames += [f for f in sim.frames(start + t0, 100) if f.equipment_id == equipment]
    return frames, [injection.sensor], start + 600


def series(frames: list[TelemetryFrame], sensor: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(s.ts.timestamp(), s.values.get(sensor, math.nan)) for f in frames for s in f.samples]
    t, v = zip(*points, strict=True)
    return np.array(t), np.array(v)


PROCESS_FAULTS = [
    ("moisture_ingress", "S1-DRY-01"),
    ("h2s_rise", "S2-DRY-01"),
    ("mill_overheating", "S1-MILL-02"),
    ("furnace_overshoot", "S1-FURN-01"),
    ("lamination_pressure_loss", "C1-LAM-01"),
    ("weld_energy_drift", "C2-WELD-01"),
    ("seal_temperature_drop", "C1-SEAL-02"),
    ("self_discharge_outlier", "C2-EOL-01"),
]


@pytest.mark.parametrize(("fault", "equipment"), PROCESS_FAULTS)
def test_process_faults_move_their_sensor_far_beyond_noise(plant: PlantModel, fault: str, equipment: str) -> None:
    """Against the same run with a zero-size fault (same noise, same states): the fault's own effect."""
    frames, (sensor,), begin = simulate(plant, fault, equipment)
    baseline, _, _ = simulate(plant, fault, equipment, magnitude=0.0)
    t, faulty = series(frames, sensor)
    effect = faulty - series(baseline, sensor)[1]
    spec = plant.classes[plant.equipment_by_id[equipment].equipment_class].sensors[sensor]
    assert np.all(effect[t < begin] == 0)
    during = effect[(t >= begin + 300) & (t < begin + 600)]
    size = np.max(np.abs(during)) if fault == "self_discharge_outlier" else np.median(np.abs(during))
    assert size > 8 * spec.noise, f"{fault} moved {sensor} by {size}, noise {spec.noise}"
    after = effect[t >= begin + plant.faults[fault].duration_s + 600]
    assert np.median(np.abs(after)) < size / 10, "the process recovers after the fault"


def test_sensor_faults_corrupt_one_measurement(plant: PlantModel) -> None:
    frames, (sensor,), begin = simulate(plant, "sensor_stuck", "C1-CAL-01")
    t, v = series(frames, sensor)
    window = (t >= begin) & (t < begin + 600)
    assert len(set(v[window])) == 1 and len(set(v[~window])) > 100

    frames, (sensor,), begin = simulate(plant, "sensor_dropout", "C1-COAT-01")
    t, v = series(frames, sensor)
    window = (t >= begin) & (t < begin + 600)
    assert np.isnan(v[window]).all() and not np.isnan(v[~window]).any()

    frames, (sensor,), begin = simulate(plant, "sensor_spike", "S1-QC-01")
    t, v = series(frames, sensor)
    noise = plant.classes["conductivity_qc"].sensors[sensor].noise
    window = (t >= begin) & (t < begin + 600)
    assert np.sum(np.abs(v[window] - np.median(v)) > 8 * noise) > 50
    assert np.sum(np.abs(v[~window] - np.median(v)) > 8 * noise) == 0


def test_cell_lines_carry_the_lot_their_synthesis_line_made_before(plant: PlantModel) -> None:
    start = math.floor(START / plant.lot_duration_s) * plant.lot_duration_s + 100
    frames = PlantSimulator(plant, 1, []).frames(start, 10)
    lots = {f.equipment_id: f.lot_id for f in frames}
    number = lot_number(start, plant.lot_duration_s)
    assert lots["S1-MILL-01"] == lot_id("syn-1", number)
    assert lots["C1-LAM-01"] == lot_id("syn-1", number - 1)
    assert lots["C2-EOL-01"] == lot_id("syn-2", number - 1)


def test_labels_file_lists_each_injection(plant: PlantModel, tmp_path: Path) -> None:
    import msgspec

    rng = np.random.default_rng(1)
    plan = RunPlan(
        start_s=START,
        duration_s=3600,
        frame_samples=10,
        speed=None,
        injections=[
            plan_injection(plant, "mill_overheating", None, START + 100, rng),
            plan_injection(plant, "sensor_drift", "C1-EOL-01", START + 900, rng),
        ],
    )
    path = tmp_path / "labels.jsonl"
    write_labels(path, plan)
    read = [msgspec.json.decode(line, type=FaultLabel) for line in path.read_bytes().splitlines()]
    assert read == labels(plan)
    assert read[0].fault == "mill_overheating" and read[0].sensor == "jar_temp"
    assert read[1].equipment_id == "C1-EOL-01" and read[1].end_s - read[1].start_s == 900
