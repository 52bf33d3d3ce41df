"""Vectorised signal generation for one equipment unit, a chunk of time steps at a time.

Per sensor, in the order of the plant file: target = nominal (or recipe setpoint, profile or idle value)
+ gain x each driver's deviation from its nominal + process-fault offset; the process value follows the
target through a first-order lag; the measurement adds white noise and sensor faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from linewatch.core.plant import EquipmentClass, Sensor

RAMP_SOAK_START_DEGC = 25.0
RAMP_RATE_DEGC_PER_S = 20.0 / 60.0
SOAK_S = 3600.0
COOL_RATE_DEGC_PER_S = 10.0 / 60.0
PRESS_CYCLE_S = 90.0


def ramp_soak(t: np.ndarray, soak_degc: float) -> np.ndarray:
    """Furnace programme: ramp from ambient to the soak temperature, hold, cool; then the next charge."""
    ramp = (soak_degc - RAMP_SOAK_START_DEGC) / RAMP_RATE_DEGC_PER_S
    cool = (soak_degc - RAMP_SOAK_START_DEGC) / COOL_RATE_DEGC_PER_S
    phase = np.mod(t, ramp + SOAK_S + cool)
    heating = RAMP_SOAK_START_DEGC + phase * RAMP_RATE_DEGC_PER_S
    cooling = soak_degc - (phase - ramp - SOAK_S) * COOL_RATE_DEGC_PER_S
    return np.asarray(np.where(phase < ramp, heating, np.where(phase < ramp + SOAK_S, soak_degc, cooling)))


def press_cycle(t: np.ndarray) -> np.ndarray:
    """Lamination press stroke as a fraction of full pressure: 15 s up, 50 s dwell, 15 s down, 10 s open."""
    phase = np.mod(t, PRESS_CYCLE_S)
    return np.asarray(np.clip(np.minimum(phase / 15.0, (80.0 - phase) / 15.0), 0.0, 1.0))


@dataclass
class SensorState:
    process: float
    stuck_value: float | None = None


@dataclass
class EquipmentPhysics:
    spec: EquipmentClass
    period_s: float
    rng: np.random.Generator
    profile_offset_s: float
    states: dict[str, SensorState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, sensor in self.spec.sensors.items():
            self.states[name] = SensorState(process=sensor.nominal)

    def step(
        self,
        t: np.ndarray,
        running: bool,
        recipe: str | None,
        process_offsets: dict[str, np.ndarray],
        process_scales: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Process values (before measurement noise) for times `t` (seconds since the epoch); a fault
        shifts a sensor's target by an offset or scales it by (1 + scale)."""
        setpoints = self.spec.recipes.get(recipe, {}) if recipe else {}
        values: dict[str, np.ndarray] = {}
        for name, sensor in self.spec.sensors.items():
            target = self._target(sensor, setpoints.get(name, sensor.nominal), t, running, values)
            if process_scales and name in process_scales:
                target = target * (1.0 + process_scales[name])
            if name in process_offsets:
                target = target + process_offsets[name]
            values[name] = self._lag(name, sensor, target)
        return values

    def _target(
        self, sensor: Sensor, nominal: float, t: np.ndarray, running: bool, values: dict[str, np.ndarray]
    ) -> np.ndarray:
        if not running and sensor.idle is not None:
            return np.full(t.shape, sensor.idle)
        if sensor.profile == "ramp_soak":
            return ramp_soak(t + self.profile_offset_s, nominal) if running else np.full(t.shape, RAMP_SOAK_START_DEGC)
        if sensor.profile == "press_cycle":
            return nominal * press_cycle(t + self.profile_offset_s) if running else np.zeros(t.shape)
        target = np.full(t.shape, nominal)
        for driver, gain in sensor.follows.items():
            target = target + gain * (values[driver] - self.spec.sensors[driver].nominal)
        return target

    def _lag(self, name: str, sensor: Sensor, target: np.ndarray) -> np.ndarray:
        state = self.states[name]
        if sensor.tau_s <= 0:
            out = target
        else:
            alpha = float(np.exp(-self.period_s / sensor.tau_s))
            out, _ = lfilter([1 - alpha], [1, -alpha], target, zi=[alpha * state.process])
        state.process = float(out[-1])
        return np.asarray(out)

    def measure(self, process: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            name: values + self.rng.normal(0.0, self.spec.sensors[name].noise, values.shape)
            if self.spec.sensors[name].noise > 0
            else values.copy()
            for name, values in process.items()
        }
