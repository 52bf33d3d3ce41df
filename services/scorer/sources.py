"""Where training and evaluation frames come from: the simulator here; a frames file, InfluxDB or any CSV
through linewatch.sources."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from linewatch.contract import TelemetryFrame
from linewatch.plant import PlantModel
from linewatch.sources import FRAME_SAMPLES
from simulator.faults import Injection, random_schedule
from simulator.plant_sim import PlantSimulator


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


def fault_catalogue_schedule(
    plant: PlantModel, start_s: float, hours: float, seed: int, per_type: int
) -> list[Injection]:
    """Every fault type of the catalogue `per_type` times, spread over the run on random units."""
    count = per_type * len(plant.faults)
    return random_schedule(plant, start_s, hours * 3600, count, np.random.default_rng([seed, 99]))
