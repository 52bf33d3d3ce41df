"""Streaming scoring of telemetry frames, unit by unit: shared by the faust agent, training and evaluation.

Only running samples are scored, and only once the unit has run for its class's settle time after a start-up
or a recipe change. A sample is anomalous once its score has been >= 1 for the model's debounce, counted in
samples. Each unit's stream state (`features.StreamState`) and debounce count carry from frame to frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import numpy as np

from linewatch.core.contract import SampleScore, TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer.features import FeatureBlock, FeatureLayout, StreamState, stream_block
from linewatch.services.scorer.models import DATA_QUALITY_SCORE, ClassModel, Detection


class UnitState(msgspec.Struct):
    """What the scorer remembers of one unit between frames."""

    running_since: float | None = None
    recipe: str | None = None
    streams: dict[str, StreamState] = {}  # feature layout -> its stream
    runs: dict[str, int] = {}  # role -> samples in a row at or above the alarm level
    applied: dict[str, int] = {}  # "topic:partition" -> last offset scored: a redelivery is skipped
    recent_frames: list[int] = []  # fingerprints of the frames scored last: a copy re-published upstream is skipped


unit_encoder = msgspec.json.Encoder()
unit_decoder = msgspec.json.Decoder(UnitState)


@dataclass
class Prepared:
    """A running frame as arrays, and which of its samples may be scored (settled)."""

    stamps: list[datetime]
    ts: np.ndarray
    values: np.ndarray
    provided: np.ndarray
    scoreable: np.ndarray
    blocks: dict[str, FeatureBlock] = field(default_factory=dict)


@dataclass
class Decision:
    rows: np.ndarray  # which samples of the frame were scored
    detection: Detection
    missing: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray


class PlantScorer:
    def __init__(self, plant: PlantModel) -> None:
        self.plant = plant
        self.units: dict[str, UnitState] = {}

    def prepare(self, frame: TelemetryFrame) -> Prepared | None:
        """Track the unit's state; None when nothing in the frame runs (the unit's streams restart)."""
        spec = self.plant.classes.get(frame.equipment_class)
        if spec is None:
            return None
        unit = self.units.setdefault(frame.equipment_id, UnitState())
        ts = np.array([s.ts.timestamp() for s in frame.samples])
        if frame.state != "running":
            unit.running_since, unit.streams, unit.runs = None, {}, {}
            return None
        if unit.running_since is None or frame.recipe != unit.recipe:
            # Start-ups and recipe changes move lagged values for a while: wait for the class's settle time,
            # and begin the streams afresh after it.
            unit.running_since, unit.recipe, unit.streams = float(ts[0]), frame.recipe, {}
        sensors = list(spec.sensors)
        values = np.array([[s.values.get(name, math.nan) for name in sensors] for s in frame.samples])
        provided = np.array([name in frame.units for name in sensors])
        scoreable = ts >= unit.running_since + spec.settle_s
        return Prepared([s.ts for s in frame.samples], ts, values, provided, scoreable)

    def advance(self, equipment_id: str, prepared: Prepared, models: Iterable[ClassModel]) -> None:
        """Feed the frame's settled samples to the unit's stream of each feature layout in use (once each,
        whatever the roles). Samples of a start-up or recipe change before the settle time never enter a
        stream: its rates and smoothing begin with the steady process."""
        unit = self.units[equipment_id]
        settled = np.flatnonzero(prepared.scoreable)
        for model in models:
            key = model.layout.key
            if key not in prepared.blocks and len(settled):
                stream = unit.streams.setdefault(key, StreamState())
                prepared.blocks[key] = stream_block(
                    stream,
                    model.layout,
                    prepared.values[settled],
                    prepared.provided,
                    prepared.ts[settled],
                    model.period_s,
                )

    def decide(self, equipment_id: str, prepared: Prepared, model: ClassModel, role: str) -> Decision | None:
        return self.decide_many([(equipment_id, prepared)], model, role)[0]

    def decide_many(self, frames: list[tuple[str, Prepared]], model: ClassModel, role: str) -> list[Decision | None]:
        """Frames (equipment id, prepared, in arrival order) scored by one model in one detection call, since
        scikit-learn's cost is per call; then the debounce runs along each unit's samples in that order."""
        taken: list[tuple[int, np.ndarray, FeatureBlock]] = []
        for index, (equipment_id, prepared) in enumerate(frames):
            self.advance(equipment_id, prepared, [model])
            block = prepared.blocks.get(model.layout.key)
            if block is None:
                continue
            usable = block.warm & (block.position >= model.settle)
            if usable.any():
                taken.append((index, np.flatnonzero(prepared.scoreable)[usable], block.take(np.flatnonzero(usable))))
        decisions: list[Decision | None] = [None] * len(frames)
        if not taken:
            return decisions
        together = model.detect(FeatureBlock.concat([scored for _, _, scored in taken]))
        start = 0
        for index, rows, scored in taken:
            detection = Detection(
                *(getattr(together, name)[start : start + len(rows)] for name in Detection.__dataclass_fields__)
            )
            start += len(rows)
            score = np.where(
                scored.missing.any(axis=1), np.maximum(detection.score, DATA_QUALITY_SCORE), detection.score
            )
            unit = self.units[frames[index][0]]
            run = unit.runs.get(role, 0)
            anomalous = np.zeros(len(score), dtype=bool)
            for i, above in enumerate((score >= 1.0).tolist()):
                run = run + 1 if above else 0
                anomalous[i] = run >= model.debounce
            unit.runs[role] = run
            decisions[index] = Decision(rows, detection, scored.missing, score, anomalous)
        return decisions

    def score_many(
        self, frames: list[tuple[TelemetryFrame, Prepared]], model: ClassModel, role: str
    ) -> list[list[SampleScore]]:
        decisions = self.decide_many([(frame.equipment_id, prepared) for frame, prepared in frames], model, role)
        return [
            [] if decision is None else self._samples(prepared, decision, model.sensors)
            for (_, prepared), decision in zip(frames, decisions, strict=True)
        ]

    @staticmethod
    def _samples(prepared: Prepared, decision: Decision, sensors: list[str]) -> list[SampleScore]:
        detection = decision.detection
        flagged = decision.missing | detection.flatline
        contribution = detection.contribution + 100.0 * flagged
        top = np.argsort(-contribution, axis=1)[:, :3].tolist()
        columns = [
            np.round(a, 4).tolist()
            for a in (
                decision.score,
                detection.t2,
                detection.spe,
                detection.drift,
                detection.iforest,
                detection.univariate,
            )
        ]
        return [
            SampleScore(
                ts=prepared.stamps[row],
                score=score,
                anomalous=bool(anomalous),
                t2=t2,
                spe=spe,
                drift=drift,
                iforest=iforest,
                univariate=univariate,
                missing=[sensors[j] for j in np.flatnonzero(decision.missing[i])] if flagged[i].any() else [],
                flatline=[sensors[j] for j in np.flatnonzero(detection.flatline[i])] if flagged[i].any() else [],
                top_sensors=[sensors[j] for j in top[i]],
            )
            for i, (row, anomalous, score, t2, spe, drift, iforest, univariate) in enumerate(
                zip(decision.rows.tolist(), decision.anomalous.tolist(), *columns, strict=True)
            )
        ]


def layout_for(plant: PlantModel, equipment_class: str, lags: int = 0) -> FeatureLayout:
    return FeatureLayout.for_class(plant.classes[equipment_class], lags)
