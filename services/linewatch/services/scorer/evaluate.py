"""Detection quality on labelled streams: per fault type detected or not, delay, point-wise precision,
recall and F1, and false alerts during normal operation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.models import ClassModel

RECOVERY_S = 300.0  # after a fault ends the process returns with its lag: neither hit nor false alarm
MERGE_GAP_S = 60.0  # anomalous samples closer than this form one alert


@dataclass(frozen=True)
class Label:
    fault: str
    equipment_id: str
    start_s: float
    end_s: float


@dataclass
class Trace:
    """Every scored sample of one unit: time and the debounced decision."""

    ts: list[float] = field(default_factory=list)
    anomalous: list[bool] = field(default_factory=list)


def score_stream(
    plant: PlantModel, frames: Iterable[TelemetryFrame], models: dict[str, ClassModel]
) -> dict[str, Trace]:
    scorer = PlantScorer(plant)
    traces: dict[str, Trace] = defaultdict(Trace)
    for frame in frames:
        model = models.get(frame.equipment_class)
        block = scorer.prepare(frame) if model is not None else None
        if block is None or model is None:
            continue
        decision = scorer.decide(frame.equipment_id, block, model, "active")
        trace = traces[frame.equipment_id]
        trace.ts.extend(block.ts.tolist())
        trace.anomalous.extend(decision.anomalous.tolist())
    return traces


def alerts(trace: Trace) -> list[tuple[float, float]]:
    """Runs of anomalous samples, merged across short gaps: what an operator would see as alerts."""
    episodes: list[list[float]] = []
    for ts, anomalous in zip(trace.ts, trace.anomalous, strict=True):
        if not anomalous:
            continue
        if episodes and ts - episodes[-1][1] <= MERGE_GAP_S:
            episodes[-1][1] = ts
        else:
            episodes.append([ts, ts])
    return [(a, b) for a, b in episodes]


@dataclass
class FaultResult:
    detected: int = 0
    total: int = 0
    delays: list[float] = field(default_factory=list)
    tp: int = 0
    fn: int = 0
    fp: int = 0


@dataclass
class Report:
    faults: dict[str, FaultResult] = field(default_factory=lambda: defaultdict(FaultResult))
    false_alerts: int = 0
    normal_line_hours: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    alerts_total: int = 0

    def add_run(
        self, plant: PlantModel, traces: dict[str, Trace], labels: list[Label], hours: float, lines: int | None = None
    ) -> None:
        by_unit: dict[str, list[Label]] = defaultdict(list)
        for label in labels:
            by_unit[label.equipment_id].append(label)
        for unit, trace in traces.items():
            ts = np.array(trace.ts)
            hit = np.array(trace.anomalous, dtype=bool)
            positive = np.zeros(len(ts), dtype=bool)
            ignored = np.zeros(len(ts), dtype=bool)
            for label in by_unit[unit]:
                window = (ts >= label.start_s) & (ts < label.end_s)
                positive |= window
                ignored |= (ts >= label.end_s) & (ts < label.end_s + RECOVERY_S)
                result = self.faults[label.fault]
                result.total += 1
                found = np.flatnonzero(window & hit)
                if len(found):
                    result.detected += 1
                    result.delays.append(float(ts[found[0]] - label.start_s))
                result.tp += int((window & hit).sum())
                result.fn += int((window & ~hit).sum())
                near = (ts >= label.start_s - 1800) & (ts < label.end_s + 1800) & ~positive & ~ignored
                result.fp += int((near & hit).sum())
            counted = ~ignored
            self.tp += int((positive & hit & counted).sum())
            self.fp += int((~positive & hit & counted).sum())
            self.fn += int((positive & ~hit).sum())
            for start, end in alerts(trace):
                self.alerts_total += 1
                explained = any(label.start_s <= end and start < label.end_s + RECOVERY_S for label in by_unit[unit])
                self.false_alerts += 0 if explained else 1
        self.normal_line_hours += hours * (len(plant.lines) if lines is None else lines)

    def table(self) -> list[str]:
        lines = [f"{'fault':<26}{'detected':>10}{'median delay s':>16}{'precision':>11}{'recall':>8}{'F1':>7}"]
        for name, r in sorted(self.faults.items()):
            precision, recall, f1 = _prf(r.tp, r.fp, r.fn)
            delay = f"{np.median(r.delays):.0f}" if r.delays else "-"
            lines.append(f"{name:<26}{r.detected:>5}/{r.total:<4}{delay:>16}{precision:>11.2f}{recall:>8.2f}{f1:>7.2f}")
        return lines

    def summary(self) -> dict[str, float]:
        detected = sum(r.detected for r in self.faults.values())
        total = sum(r.total for r in self.faults.values())
        delays = [d for r in self.faults.values() for d in r.delays]
        return {
            "detected_pct": 100.0 * detected / total if total else 0.0,
            "median_delay_s": float(np.median(delays)) if delays else float("nan"),
            "false_alerts_per_8h": self.false_alerts / (self.normal_line_hours / 8) if self.normal_line_hours else 0.0,
            "f1": _prf(self.tp, self.fp, self.fn)[2],
        }


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
