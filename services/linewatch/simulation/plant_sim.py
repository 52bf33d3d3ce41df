"""The whole plant, stepped chunk by chunk: equipment states, recipes, lots, faults -> telemetry frames."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from linewatch.core.contract import (
    FRAME_SAMPLES,
    LOT_SCHEMA_VERSION,
    TELEMETRY_SCHEMA_VERSION,
    EquipmentState,
    LotEvent,
    Sample,
    TelemetryFrame,
    equipment_fields,
)
from linewatch.core.plant import Equipment, PlantModel
from linewatch.simulation.faults import Injection
from linewatch.simulation.physics import EquipmentPhysics

# Share of time and duration range (s) of each equipment state once a running period ends.
STATE_CHOICES: list[tuple[EquipmentState, float, tuple[float, float]]] = [
    ("running", 0.90, (1200.0, 5400.0)),
    ("idle", 0.08, (120.0, 600.0)),
    ("maintenance", 0.02, (600.0, 1800.0)),
]
ALWAYS_RUNNING = {"dry_room", "conductivity_qc"}
SETTLE_BEFORE_FAULT_S = 1800.0


@dataclass
class Unit:
    equipment: Equipment
    physics: EquipmentPhysics
    units: dict[str, str]
    state: EquipmentState = "running"
    state_until_s: float = 0.0
    seq: int = 0
    stuck: dict[int, float] = field(default_factory=dict)


def lot_number(t_s: float, lot_duration_s: float) -> int:
    return int(t_s // lot_duration_s)


def lot_id(line: str, number: int) -> str:
    return f"EL-{line.upper().replace('-', '')}-{number}"


def cell_batch_id(line: str, number: int) -> str:
    return f"CB-{line.upper().replace('-', '')}-{number}"


def lot_events(plant: PlantModel, number: int, ended_s: float) -> list[LotEvent]:
    """Genealogy at the end of lot window `number` (or part of it, when a run stops early): each synthesis
    line made one electrolyte lot; each cell line built cells from the lot its supplier made the window before."""
    share = min(1.0, (ended_s - number * plant.lot_duration_s) / plant.lot_duration_s)
    when = datetime.fromtimestamp(ended_s, UTC)
    events = []
    for name, line in plant.lines.items():
        area = plant.area_of_line[name]
        if line.consumes_from is None:
            lot = lot_id(name, number)
            events.append(
                LotEvent(
                    schema_version=LOT_SCHEMA_VERSION,
                    kind="electrolyte_lot_made",
                    ts=when,
                    lot_id=lot,
                    site=plant.site,
                    area=area,
                    line=name,
                )
            )
            continue
        batch = cell_batch_id(name, number)
        cells = [f"{batch}-{k:03d}" for k in range(int(plant.cells_per_lot * share))]
        if cells:
            consumed = [lot_id(line.consumes_from, number - 1)]
            events.append(
                LotEvent(
                    schema_version=LOT_SCHEMA_VERSION,
                    kind="cells_produced",
                    ts=when,
                    lot_id=batch,
                    input_lots=consumed,
                    cells=cells,
                    site=plant.site,
                    area=area,
                    line=name,
                )
            )
    return events


class PlantSimulator:
    def __init__(self, plant: PlantModel, seed: int, injections: list[Injection]) -> None:
        self.plant = plant
        self.injections = injections
        self.rng = np.random.default_rng(seed)
        self.units: list[Unit] = []
        for index, equipment in enumerate(plant.equipment):
            spec = plant.classes[equipment.equipment_class]
            rng = np.random.default_rng([seed, index])
            physics = EquipmentPhysics(spec, plant.sample_period_s, rng, float(rng.random() * 20_000))
            self.units.append(Unit(equipment, physics, {n: s.unit for n, s in spec.sensors.items()}))
        self._warm = False

    def _warm_up(self, t0_s: float) -> None:
        """Let lagged process values settle before the first sample, so the run starts without a transient."""
        t = t0_s - self.plant.sample_period_s * np.arange(1800, 0, -1)
        for unit in self.units:
            unit.physics.step(t, True, None, {})
        self._warm = True

    def next_boundary_s(self, t0_s: float) -> float:
        """Chunks end at lot changes, so every frame belongs to exactly one lot."""
        duration = self.plant.lot_duration_s
        return (lot_number(t0_s, duration) + 1) * duration

    def frames(self, t0_s: float, steps: int) -> list[TelemetryFrame]:
        if not self._warm:
            self._warm_up(t0_s)
        period = self.plant.sample_period_s
        t = t0_s + np.arange(steps) * period
        stamps = [datetime.fromtimestamp(x, UTC) for x in t.tolist()]
        return [self._unit_frame(unit, t, stamps) for unit in self.units]

    def _unit_frame(self, unit: Unit, t: np.ndarray, stamps: list[datetime]) -> TelemetryFrame:
        equipment = unit.equipment
        mine = [i for i in self.injections if i.equipment_id == equipment.id]
        active = [i for i in mine if i.start_s < t[-1] + 1 and i.end_s > t[0]]
        # A faulted unit runs, and has run long enough to settle, when its fault starts.
        settling = any(i.start_s - SETTLE_BEFORE_FAULT_S < t[-1] + 1 and i.end_s > t[0] for i in mine)
        self._advance_state(unit, float(t[0]), forced_running=settling)
        running = unit.state == "running"
        line = self.plant.lines[equipment.line]
        number = lot_number(float(t[0]), self.plant.lot_duration_s)
        lot = lot_id(line.consumes_from, number - 1) if line.consumes_from else lot_id(line.name, number)
        recipes = sorted(unit.physics.spec.recipes)
        recipe = recipes[number % len(recipes)] if recipes else None

        sensors = unit.physics.spec.sensors
        offsets: dict[str, np.ndarray] = {}
        scales: dict[str, np.ndarray] = {}
        for injection in active:
            if injection.fault.kind == "process":
                into = scales if injection.fault.relative else offsets
                deviation = injection.deviation(t, sensors[injection.sensor].noise, unit.physics.rng)
                into[injection.sensor] = into.get(injection.sensor, 0.0) + deviation
        measured = unit.physics.measure(unit.physics.step(t, running, recipe, offsets, scales))
        dropped = np.zeros((len(t), 0), dtype=bool)
        names = list(sensors)
        for injection in active:
            if injection.fault.kind == "sensor":
                dropped = self._apply_sensor_fault(unit, injection, t, measured, names, dropped)

        matrix = np.round(np.column_stack([measured[n] for n in names]), 5).tolist()
        rows = [dict(zip(names, row, strict=True)) for row in matrix]
        if dropped.shape[1]:
            for row_index, column in zip(*np.nonzero(dropped), strict=True):
                rows[int(row_index)].pop(names[int(column)], None)
        samples = [Sample(ts=ts, values=row) for ts, row in zip(stamps, rows, strict=True) if row]
        unit.seq += 1
        return TelemetryFrame(
            **equipment_fields(equipment.ref),
            schema_version=TELEMETRY_SCHEMA_VERSION,
            seq=unit.seq,
            state=unit.state,
            units=unit.units,
            samples=samples,
            lot_id=lot,
            recipe=recipe,
        )

    def _apply_sensor_fault(
        self,
        unit: Unit,
        injection: Injection,
        t: np.ndarray,
        measured: dict[str, np.ndarray],
        names: list[str],
        dropped: np.ndarray,
    ) -> np.ndarray:
        sensor = injection.sensor
        window = injection.window(t)
        shape = injection.fault.shape
        if shape == "stuck" and window.any():
            key = id(injection)
            if key not in unit.stuck:
                unit.stuck[key] = float(measured[sensor][np.argmax(window)])
            measured[sensor] = np.where(window, unit.stuck[key], measured[sensor])
        elif shape == "dropout":
            if dropped.shape[1] == 0:
                dropped = np.zeros((len(t), len(names)), dtype=bool)
            dropped[:, names.index(sensor)] |= window
        else:
            noise = unit.physics.spec.sensors[sensor].noise
            measured[sensor] = measured[sensor] + injection.deviation(t, noise, unit.physics.rng)
        return dropped

    def _advance_state(self, unit: Unit, t_s: float, forced_running: bool) -> None:
        if unit.equipment.equipment_class in ALWAYS_RUNNING or forced_running:
            if unit.state != "running":
                unit.state, unit.state_until_s = "running", t_s + 1200.0
            return
        if t_s < unit.state_until_s:
            return
        if unit.state_until_s == 0.0:  # first chunk: start running
            unit.state_until_s = t_s + float(self.rng.uniform(1200.0, 5400.0))
            return
        weights = np.array([w for _, w, _ in STATE_CHOICES])
        choice = int(self.rng.choice(len(STATE_CHOICES), p=weights / weights.sum()))
        state, _, (low, high) = STATE_CHOICES[choice]
        unit.state, unit.state_until_s = state, t_s + float(self.rng.uniform(low, high))


def simulated(
    plant: PlantModel, start_s: float, hours: float, seed: int, injections: list[Injection] | None = None
) -> Iterator[TelemetryFrame]:
    """The plant simulator's frames in time order (normal operation unless faults are given)."""
    simulator = PlantSimulator(plant, seed, injections or [])
    t0, end = start_s, start_s + hours * 3600
    while t0 < end:
        steps = int(min(FRAME_SAMPLES, math.ceil((simulator.next_boundary_s(t0) - t0) / plant.sample_period_s)))
        yield from simulator.frames(t0, steps)
        t0 += steps * plant.sample_period_s
