"""Detection quality on labelled streams. Every sample counts (one not scored is one not flagged, and the
scored share is reported); one F1 definition throughout, F1 = TP / (TP + (FP + FN) / 2):

* far_pct: flagged normal samples / normal samples x 100; mar_pct: unflagged faulty samples / faulty x 100;
* per fault segment (a run of faulty samples): detected or not, and the delay in samples to the first flag;
* for simulated runs, per fault type, and alerts (flagged samples merged across short gaps) that no fault
  explains, per 8 h per line. Gaps and recovery are counted in samples, whatever the sampling period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.models import ClassModel, pick

RECOVERY_SAMPLES = 300  # after a fault ends the process returns with its lag: an alert here is still the fault's
MERGE_SAMPLES = 60  # flagged samples closer than this form one alert


@dataclass(frozen=True)
class Label:
    fault: str
    equipment_id: str
    start_s: float
    end_s: float


@dataclass
class Trace:
    """Every sample of one unit: time, whether it was scored, and the debounced decision."""

    ts: list[float] = field(default_factory=list)
    scored: list[bool] = field(default_factory=list)
    anomalous: list[bool] = field(default_factory=list)


def score_stream(
    plant: PlantModel, frames: Iterable[TelemetryFrame], models: dict[str, ClassModel]
) -> dict[str, Trace]:
    scorer = PlantScorer(plant)
    traces: dict[str, Trace] = defaultdict(Trace)
    for frame in frames:
        count = len(frame.samples)
        scored, flagged = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
        prepared = scorer.prepare(frame)
        model = pick(models, frame.equipment_class, frame.recipe) if prepared is not None else None
        if prepared is not None and model is not None:
            decision = scorer.decide(frame.equipment_id, prepared, model, "active")
            if decision is not None:
                scored[decision.rows], flagged[decision.rows] = True, decision.anomalous
        trace = traces[frame.equipment_id]
        trace.ts.extend(s.ts.timestamp() for s in frame.samples)
        trace.scored.extend(scored.tolist())
        trace.anomalous.extend(flagged.tolist())
    return traces


def alerts(flagged: np.ndarray) -> list[tuple[int, int]]:
    """Runs of flagged samples merged across gaps of fewer than MERGE_SAMPLES: what an operator sees."""
    hits = np.flatnonzero(flagged)
    if not len(hits):
        return []
    breaks = np.flatnonzero(np.diff(hits) > MERGE_SAMPLES)
    starts, ends = np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [len(hits) - 1]])
    return [(int(hits[a]), int(hits[b])) for a, b in zip(starts, ends, strict=True)]


def segments(faulty: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of faulty samples."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], faulty.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass
class Counts:
    samples: int = 0
    scored: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    segments: int = 0
    delays: list[int] = field(default_factory=list)  # samples from each detected segment's start to its first flag

    def add(self, faulty: np.ndarray, flagged: np.ndarray, scored: np.ndarray) -> None:
        self.samples += len(faulty)
        self.scored += int(scored.sum())
        self.tp += int((faulty & flagged).sum())
        self.fp += int((~faulty & flagged).sum())
        self.fn += int((faulty & ~flagged).sum())
        self.tn += int((~faulty & ~flagged).sum())
        for start, end in segments(faulty):
            self.segments += 1
            first = np.flatnonzero(flagged[start:end])
            if len(first):
                self.delays.append(int(first[0]))

    @property
    def f1(self) -> float:
        errors = self.fp + self.fn
        return self.tp / (self.tp + errors / 2) if self.tp + errors else 0.0

    @property
    def far_pct(self) -> float:
        return 100 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar_pct(self) -> float:
        return 100 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    def line(self) -> str:
        delay = f"{np.median(self.delays):.0f}" if self.delays else "nan"
        scored = 100 * self.scored / self.samples if self.samples else 0.0
        return (
            f"samples={self.samples} scored_pct={scored:.2f} far_pct={self.far_pct:.2f} mar_pct={self.mar_pct:.2f} "
            f"f1={self.f1:.3f} median_delay_samples={delay}"
        )


@dataclass
class FaultResult:
    counts: Counts = field(default_factory=Counts)
    delays_s: list[float] = field(default_factory=list)


@dataclass
class Report:
    total: Counts = field(default_factory=Counts)
    faults: dict[str, FaultResult] = field(default_factory=lambda: defaultdict(FaultResult))
    alerts_total: int = 0
    false_alerts: int = 0
    normal_line_hours: float = 0.0

    def add_labelled(self, trace: Trace, faulty_at: dict[float, bool]) -> None:
        """A run with a label per sample time (a CSV's label column); rows with no scored sample count too."""
        times = sorted(faulty_at)
        flagged_at = dict(zip(trace.ts, trace.anomalous, strict=True))
        scored_at = dict(zip(trace.ts, trace.scored, strict=True))
        faulty = np.array([faulty_at[t] for t in times], dtype=bool)
        flagged = np.array([flagged_at.get(t, False) for t in times], dtype=bool)
        scored = np.array([scored_at.get(t, False) for t in times], dtype=bool)
        self.total.add(faulty, flagged, scored)

    def add_run(self, plant: PlantModel, traces: dict[str, Trace], labels: list[Label], hours: float) -> None:
        """A simulated run with fault labels (intervals per unit)."""
        by_unit: dict[str, list[Label]] = defaultdict(list)
        for label in labels:
            by_unit[label.equipment_id].append(label)
        for unit, trace in traces.items():
            ts = np.array(trace.ts)
            flagged, scored = np.array(trace.anomalous, dtype=bool), np.array(trace.scored, dtype=bool)
            faulty = np.zeros(len(ts), dtype=bool)
            recovering = np.zeros(len(ts), dtype=bool)
            for label in by_unit[unit]:
                window = (ts >= label.start_s) & (ts < label.end_s)
                faulty |= window
                after = np.flatnonzero(ts >= label.end_s)[:RECOVERY_SAMPLES]
                recovering[after] = True
                result = self.faults[label.fault]
                result.counts.add(window[window], flagged[window], scored[window])
                first = np.flatnonzero(window & flagged)
                if len(first):
                    result.delays_s.append(float(ts[first[0]] - label.start_s))
            self.total.add(faulty, flagged, scored)
            for start, end in alerts(flagged):
                self.alerts_total += 1
                self.false_alerts += not (faulty[start : end + 1].any() or recovering[start : end + 1].any())
        self.normal_line_hours += hours * len(plant.lines)

    def table(self) -> list[str]:
        lines = [f"{'fault':<26}{'detected':>10}{'median delay s':>16}{'recall':>8}"]
        for name, result in sorted(self.faults.items()):
            counts = result.counts
            delay = f"{np.median(result.delays_s):.0f}" if result.delays_s else "-"
            recall = 100 - counts.mar_pct
            detected = f"{len(counts.delays)}/{counts.segments}"
            lines.append(f"{name:<26}{detected:>10}{delay:>16}{recall:>7.0f}%")
        return lines

    def summary(self) -> dict[str, float]:
        segments = sum(r.counts.segments for r in self.faults.values())
        detected = sum(len(r.counts.delays) for r in self.faults.values())
        delays = [d for r in self.faults.values() for d in r.delays_s]
        per_8h = self.false_alerts / (self.normal_line_hours / 8) if self.normal_line_hours else 0.0
        return {
            "detected_pct": 100.0 * detected / segments if segments else 0.0,
            "median_delay_s": float(np.median(delays)) if delays else float("nan"),
            "false_alerts_per_8h_per_line": per_8h,
        }
