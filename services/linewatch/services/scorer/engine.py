"""Streaming scoring of telemetry frames, unit by unit: shared by the faust agent, training and evaluation.

Only running samples are scored, and only once the unit has run for its class's settle time and the
feature window is full. A sample is anomalous once the score has been >= 1 for `debounce` samples in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from linewatch.core.contract import SampleScore, TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer.features import FeatureLayout, FeatureWindow
from linewatch.services.scorer.models import DATA_QUALITY_SCORE, ClassModel, Detection

MAX_GAP_S = 10.0  # a longer silence restarts the feature window


@dataclass
class UnitState:
    window: FeatureWindow = field(default_factory=FeatureWindow)
    last_ts: float = -math.inf
    running_since: float | None = None
    recipe: str | None = None
    consecutive: dict[str, int] = field(default_factory=dict)


@dataclass
class FrameBlock:
    """The scoreable samples of a frame as arrays."""

    stamps: list[datetime]
    ts: np.ndarray
    features: np.ndarray
    missing: np.ndarray


@dataclass
class Decision:
    detection: Detection
    score: np.ndarray
    anomalous: np.ndarray


class PlantScorer:
    def __init__(self, plant: PlantModel) -> None:
        self.plant = plant
        self.units: dict[str, UnitState] = {}
        self.layouts = {name: FeatureLayout.for_class(spec) for name, spec in plant.classes.items()}

    def prepare(self, frame: TelemetryFrame) -> FrameBlock | None:
        """Update the unit's window with the frame; None when nothing in it can be scored."""
        spec = self.plant.classes.get(frame.equipment_class)
        if spec is None:
            return None
        unit = self.units.setdefault(frame.equipment_id, UnitState())
        layout = self.layouts[frame.equipment_class]
        ts = np.array([s.ts.timestamp() for s in frame.samples])
        if ts[0] - unit.last_ts > MAX_GAP_S:
            unit.window.reset()
        unit.last_ts = float(ts[-1])
        if frame.state != "running":
            unit.running_since = None
            unit.consecutive.clear()
            unit.window.reset()
            return None
        if unit.running_since is None or frame.recipe != unit.recipe:
            # Start-ups and recipe changes move lagged values for a while: wait for the class's settle time.
            unit.running_since, unit.recipe = float(ts[0]), frame.recipe
        block = np.array([[s.values.get(name, math.nan) for name in layout.sensors] for s in frame.samples])
        provided = np.array([name in frame.units for name in layout.sensors])
        features, missing, complete = unit.window.build(block, layout, provided)
        scoreable = complete & (ts >= unit.running_since + spec.settle_s)
        if not scoreable.any():
            return None
        stamps = [sample.ts for sample, ok in zip(frame.samples, scoreable, strict=True) if ok]
        return FrameBlock(stamps, ts[scoreable], features[scoreable], missing[scoreable])

    def decide(self, equipment_id: str, block: FrameBlock, model: ClassModel, role: str) -> Decision:
        """Batched detection, then the debounce along the samples (carried across frames per role)."""
        detection = model.detect(block.features)
        score = np.where(block.missing.any(axis=1), np.maximum(detection.score, DATA_QUALITY_SCORE), detection.score)
        unit = self.units[equipment_id]
        run = unit.consecutive.get(role, 0)
        anomalous = np.zeros(len(score), dtype=bool)
        for i, above in enumerate((score >= 1.0).tolist()):
            run = run + 1 if above else 0
            anomalous[i] = run >= model.debounce
        unit.consecutive[role] = run
        return Decision(detection, score, anomalous)

    def score(self, frame: TelemetryFrame, block: FrameBlock, model: ClassModel, role: str) -> list[SampleScore]:
        decision = self.decide(frame.equipment_id, block, model, role)
        detection, sensors = decision.detection, model.sensors
        contribution = detection.contribution + 100.0 * (block.missing | detection.flatline)
        top = np.argsort(-contribution, axis=1)[:, :3].tolist()
        columns = [
            np.round(a, 4).tolist()
            for a in (decision.score, detection.t2, detection.spe, detection.iforest, detection.univariate)
        ]
        flagged = block.missing | detection.flatline
        return [
            SampleScore(
                ts=stamp,
                score=score,
                anomalous=bool(anomalous),
                t2=t2,
                spe=spe,
                iforest=iforest,
                univariate=univariate,
                missing=[sensors[j] for j in np.flatnonzero(block.missing[i])] if flagged[i].any() else [],
                flatline=[sensors[j] for j in np.flatnonzero(detection.flatline[i])] if flagged[i].any() else [],
                top_sensors=[sensors[j] for j in top[i]],
            )
            for i, (stamp, anomalous, score, t2, spe, iforest, univariate) in enumerate(
                zip(block.stamps, decision.anomalous.tolist(), *columns, strict=True)
            )
        ]
