"""Synthetic industrial processes written for `linewatch bench detection`, unlike the reference plant: normal
operation that is autocorrelated, wanders slowly and changes operating point; sampling from 1 s to 5 min; 8 to
60 variables; 300 to 5,000 training rows; faults that step, ramp, add variance, break a correlation, or
freeze or drift one sensor. Each process gives a training run, fresh normal data recorded after it, and a
faulty run with a label per sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

FAULTS = ("step", "ramp", "variance", "correlation_break", "stuck_sensor", "drifting_sensor")


@dataclass(frozen=True)
class Process:
    name: str
    variables: int
    period_s: float
    train_rows: int
    factors: int
    factor_memory: float  # AR(1) coefficient of the latent factors, per sample
    noise_memory: float  # AR(1) coefficient of each sensor's own noise
    wander: float  # amplitude of a slow mean-reverting wander, in factor standard deviations
    setpoints: int  # operating points visited (1: none)
    quantised: int = 0  # sensors read with a coarse resolution
    separator: str = ","
    fault_rows: int = 300  # rows per fault segment


PROCESSES = (
    Process("press-1s", 12, 1.0, 3000, 2, 0.98, 0.5, 0.3, 1, quantised=2, separator=";"),
    Process("dryer-10s", 20, 10.0, 2000, 3, 0.95, 0.3, 0.5, 3),
    Process("reactor-3min", 52, 180.0, 500, 8, 0.9, 0.3, 0.5, 1, separator=";", fault_rows=120),
    Process("kiln-5min", 8, 300.0, 300, 2, 0.85, 0.2, 0.4, 2, fault_rows=80),
    Process("coater-2s", 30, 2.0, 5000, 4, 0.99, 0.6, 0.3, 2),
    Process("cycler-1min", 60, 60.0, 1500, 6, 0.95, 0.4, 0.4, 1, quantised=4, fault_rows=200),
    Process("mixer-5s", 16, 5.0, 1000, 3, 0.97, 0.5, 0.6, 3, separator=";"),
)


@dataclass
class Run:
    ts: np.ndarray
    values: np.ndarray  # rows x variables
    faulty: np.ndarray  # rows
    faults: list[tuple[str, int, int]]  # (fault, first row, end row)


class Generator:
    """One process: fixed structure (loadings, scales, operating points), then runs of it."""

    def __init__(self, process: Process, seed: int) -> None:
        self.p = process
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        # Most sensors load on the process's latent factors; some measure something of their own.
        shared = rng.random(process.variables) > 0.15
        self.loadings = rng.normal(0, 1, (process.variables, process.factors)) * shared[:, None]
        self.noise = rng.uniform(0.3, 0.8, process.variables)
        self.offsets = rng.uniform(-50, 150, process.variables)
        self.scales = 10 ** rng.uniform(-1, 2, process.variables)  # engineering units from 0.1 to 100
        self.levels = rng.normal(0, 1.5, (process.setpoints, process.factors))
        self.steps = 0.05 * np.round(rng.uniform(1, 5, process.variables))  # resolution of quantised sensors
        self.start = 1_790_000_000.0

    def _ar(self, memory: float, shape: tuple[int, int]) -> np.ndarray:
        """Stationary AR(1) series of unit variance, one per column (starting anywhere in its distribution)."""
        white = self.rng.normal(0, 1, shape)
        start = memory * self.rng.normal(0, 1, (1, shape[1]))
        return np.asarray(lfilter([np.sqrt(1 - memory**2)], [1, -memory], white, axis=0, zi=start)[0])

    def run(self, rows: int, at_row: int, faults: list[tuple[str, int, int]] | None = None) -> Run:
        p, rng = self.p, self.rng
        factors = self._ar(p.factor_memory, (rows, p.factors))
        wander = p.wander * self._ar(1 - 1 / (0.2 * p.train_rows + 50), (rows, 1)) * rng.normal(0, 1, (1, p.factors))
        dwell = max(p.train_rows // 6, 30)
        # Every operating point in turn, in an order of its own per run: training sees all of them.
        visits = np.resize(rng.permutation(p.setpoints), rows // dwell + 1).repeat(dwell)[:rows]
        # Moves to a new operating point with a lag of ten samples.
        operating = lfilter([0.1], [1, -0.9], self.levels[visits], axis=0, zi=0.9 * self.levels[visits[:1]])[0]
        latent = factors + wander + operating
        noise = self._ar(p.noise_memory, (rows, p.variables)) * self.noise
        faulty = np.zeros(rows, dtype=bool)
        on_sensors: list[tuple[str, int, int, int]] = []
        for fault, begin, end in faults or []:
            faulty[begin:end] = True
            span = np.linspace(0, 1, end - begin)[:, None]
            direction = rng.choice([-1, 1], p.factors) / np.sqrt(p.factors)
            if fault == "step":
                latent[begin:end] += 3.0 * direction
            elif fault == "ramp":
                latent[begin:end] += 5.0 * span * direction
            elif fault == "variance":
                chosen = rng.choice(p.variables, max(1, p.variables // 8), replace=False)
                noise[begin:end, chosen] *= 3.0
            else:
                on_sensors.append((fault, int(rng.integers(p.variables)), begin, end))
        standard = latent @ self.loadings.T + noise
        for fault, target, begin, end in on_sensors:
            if fault == "correlation_break":  # the sensor follows factors of its own, not the process's
                standard[begin:end, target] = (
                    self._ar(p.factor_memory, (end - begin, p.factors)) @ self.loadings[target]
                )
            elif fault == "stuck_sensor":
                standard[begin:end, target] = standard[begin, target]
            elif fault == "drifting_sensor":
                spread = np.sqrt(np.sum(self.loadings[target] ** 2) + self.noise[target] ** 2)
                standard[begin:end, target] += 5.0 * spread * np.linspace(0, 1, end - begin)
        values = self.offsets + self.scales * standard
        for j in range(p.quantised):
            resolution = self.steps[j] * self.scales[j]
            values[:, j] = np.round(values[:, j] / resolution) * resolution
        ts = self.start + (at_row + np.arange(rows)) * p.period_s
        return Run(ts, values, faulty, list(faults or []))


def datasets(process: Process, seed: int = 0) -> tuple[Run, Run, Run]:
    """Training run, fresh normal run recorded after it, and a faulty run (a normal start, then each fault in
    turn with normal operation between)."""
    generator = Generator(process, seed)
    train = generator.run(process.train_rows, 0)
    fresh_rows = max(3 * process.train_rows, 2000)
    fresh = generator.run(fresh_rows, process.train_rows)
    length = process.fault_rows
    faults = [(fault, length + 2 * length * i, 2 * length + 2 * length * i) for i, fault in enumerate(FAULTS)]
    faulty = generator.run(2 * length * len(FAULTS) + length, process.train_rows + fresh_rows, faults)
    return train, fresh, faulty
