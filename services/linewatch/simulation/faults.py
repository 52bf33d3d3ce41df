"""Fault injections: when, where, how they move the process or corrupt a measurement, and their labels."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

from linewatch.core.plant import Fault, PlantModel


class FaultLabel(msgspec.Struct, frozen=True):
    """Ground truth for evaluation, one line of the labels file."""

    fault: str
    kind: str
    equipment_id: str
    sensor: str
    start_s: float
    end_s: float
    start: str
    end: str


@dataclass(frozen=True)
class Injection:
    fault_name: str
    fault: Fault
    equipment_id: str
    sensor: str
    start_s: float  # seconds since the epoch

    @property
    def end_s(self) -> float:
        return self.start_s + self.fault.duration_s

    def window(self, t: np.ndarray) -> np.ndarray:
        return (t >= self.start_s) & (t < self.end_s)

    def deviation(self, t: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        """Deviation over `t`, zero outside the fault window: a fraction of the process value for relative
        process faults, an absolute offset for the others (sensor faults in multiples of the noise)."""
        fault = self.fault
        size = fault.magnitude * (max(noise, 1e-9) if fault.kind == "sensor" else 1.0)
        active = self.window(t)
        if fault.shape == "ramp":
            progress = np.clip((t - self.start_s) / (fault.duration_s / 2), 0.0, 1.0)
            return np.where(active, size * progress, 0.0)
        if fault.shape == "step":
            return np.where(active, size, 0.0)
        if fault.shape == "spikes":
            hits = active & (rng.random(t.shape) < 0.25)
            sign = 1.0 if fault.kind == "process" else rng.choice([-1.0, 1.0], t.shape)
            return np.where(hits, size * sign, 0.0)
        return np.zeros(t.shape)


def pick_sensor(plant: PlantModel, equipment_class: str, rng: np.random.Generator) -> str:
    """A sensor fault hits a measured (noisy) sensor of the unit."""
    sensors = [name for name, s in plant.classes[equipment_class].sensors.items() if s.noise > 0]
    return str(rng.choice(sensors))


def plan_injection(
    plant: PlantModel, fault_name: str, equipment_id: str | None, start_s: float, rng: np.random.Generator
) -> Injection:
    fault = plant.faults[fault_name]
    candidates = [
        e for e in plant.equipment if fault.equipment_class is None or e.equipment_class == fault.equipment_class
    ]
    if equipment_id is None:
        equipment = candidates[int(rng.integers(len(candidates)))]
    else:
        equipment = plant.equipment_by_id[equipment_id]
        if equipment not in candidates:
            raise ValueError(f"fault {fault_name} applies to {fault.equipment_class}, not {equipment.id}")
    sensor = fault.sensor or pick_sensor(plant, equipment.equipment_class, rng)
    return Injection(fault_name, fault, equipment.id, sensor, start_s)


def random_schedule(
    plant: PlantModel,
    start_s: float,
    duration_s: float,
    count: int,
    rng: np.random.Generator,
    names: list[str] | None = None,
) -> list[Injection]:
    """`count` faults spread over the run, cycling through the catalogue, never overlapping in time."""
    catalogue = names or sorted(plant.faults)
    if count == 0:
        return []
    slot = duration_s / count
    injections = []
    for index in range(count):
        name = catalogue[index % len(catalogue)]
        room = max(slot - plant.faults[name].duration_s - 60.0, 0.0)
        begin = start_s + index * slot + 30.0 + float(rng.random()) * room
        injections.append(plan_injection(plant, name, None, begin, rng))
    return injections


def fault_catalogue_schedule(
    plant: PlantModel, start_s: float, hours: float, seed: int, per_type: int
) -> list[Injection]:
    """Every fault type of the catalogue `per_type` times, spread over the run on random units."""
    count = per_type * len(plant.faults)
    return random_schedule(plant, start_s, hours * 3600, count, np.random.default_rng([seed, 99]))
