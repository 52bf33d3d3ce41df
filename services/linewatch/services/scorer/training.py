"""Fit one model per equipment class on normal frames, and one per run context of it (a recipe, an experiment)
where there are several and each has enough data; every model calibrated to the false-alarm rate asked for.

A unit's frames form streams: a stop, a recipe change or a silence of more than `GAP_PERIODS` sample periods
ends one, and each stream has its own warm-up. The sample period is inferred from the data.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer import registry
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.features import (
    GAP_PERIODS,
    SMOOTH_WARMUP,
    FeatureBlock,
    FeatureLayout,
    StreamState,
    stream_block,
)
from linewatch.services.scorer.models import ClassModel, Targets, calibrate, lag1_autocorrelation, min_rows

log = logging.getLogger(__name__)
Contexts = Literal["auto", "pooled"]
DEFAULT_TARGETS = Targets()
# A dynamic model (the previous sample's signals as features too) where the signals are this autocorrelated
# and there are rows for twice the features.
DYNAMIC_AUTOCORRELATION = 0.5


@dataclass
class Stream:
    """One unit's continuous running stream: times, sensor values (NaN where absent), settled samples."""

    unit: str
    context: str | None
    ts: np.ndarray
    values: np.ndarray
    provided: np.ndarray
    scoreable: np.ndarray


def collect(plant: PlantModel, frames: Iterable[TelemetryFrame]) -> dict[str, list[Stream]]:
    """The running streams of every unit, per equipment class, in time order."""
    scorer = PlantScorer(plant)
    open_streams: dict[str, tuple[float | None, str | None, list[Any]]] = {}
    streams: dict[str, list[Stream]] = defaultdict(list)

    def close(unit: str, equipment_class: str) -> None:
        _, context, parts = open_streams.pop(unit, (None, None, []))
        if parts:
            streams[equipment_class].append(
                Stream(
                    unit,
                    context,
                    np.concatenate([p.ts for p in parts]),
                    np.vstack([p.values for p in parts]),
                    parts[0].provided,
                    np.concatenate([p.scoreable for p in parts]),
                )
            )

    for frame in frames:
        prepared = scorer.prepare(frame)
        unit = frame.equipment_id
        state = scorer.units.get(unit)
        current = open_streams.get(unit)
        if prepared is None or state is None:
            close(unit, frame.equipment_class)
            continue
        if current is not None and (current[0] != state.running_since or current[1] != frame.recipe):
            close(unit, frame.equipment_class)
        open_streams.setdefault(unit, (state.running_since, frame.recipe, []))[2].append(prepared)
    for unit in list(open_streams):
        close(unit, plant.equipment_by_id[unit].equipment_class)
    return streams


def sample_period(streams: list[Stream]) -> float:
    steps = np.concatenate([np.diff(s.ts) for s in streams if len(s.ts) > 1] or [np.ones(1)])
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 1.0


def _pieces(stream: Stream, period_s: float) -> list[Stream]:
    """A stream cut at its silences (longer than GAP_PERIODS sample periods)."""
    cuts = np.flatnonzero(np.diff(stream.ts) > GAP_PERIODS * period_s) + 1
    return [
        Stream(stream.unit, stream.context, stream.ts[r], stream.values[r], stream.provided, stream.scoreable[r])
        for r in np.split(np.arange(len(stream.ts)), cuts)
    ]


def _feature_runs(
    streams: list[Stream], layout: FeatureLayout, period_s: float
) -> tuple[FeatureBlock | None, list[int]]:
    """Each stream's features from its settled samples, as the scorer makes them: the warm rows of contiguous runs,
    one after the other, and each run's length. One block, not a list of runs beside it: at 200,000 rows of 50
    sensors each copy is 570 MB."""
    runs = []
    for stream in streams:
        settled = np.flatnonzero(stream.scoreable)
        if not len(settled):
            continue
        values, ts = stream.values[settled], stream.ts[settled]
        block = stream_block(StreamState(), layout, values, stream.provided, ts, period_s)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (block.warm & observed(block)).astype(int), [0]])))
        for begin, end in zip(edges[::2], edges[1::2], strict=True):
            runs.append(block.take(slice(begin, end)))  # views: one copy of the rows in all, by concat
    lengths = [len(run.features) for run in runs]
    return (None if not runs else runs[0] if len(runs) == 1 else FeatureBlock.concat(runs)), lengths


def observed(block: FeatureBlock) -> np.ndarray:
    """Rows whose features hold no stand-in: no sensor missing in the row or in the smoothing's memory before it.
    A missing value is held over (and scored as a data-quality problem); learnt as normal, a sensor silent for 13 %
    of the training rows loosened the model until it missed a 7-sigma shift."""
    index = np.arange(len(block.missing))
    last_missing = np.maximum.accumulate(np.where(block.missing.any(axis=1), index, -SMOOTH_WARMUP - 1))
    return np.asarray(index - last_missing > SMOOTH_WARMUP)


def choose_layout(plant: PlantModel, equipment_class: str, streams: list[Stream], rows: int) -> FeatureLayout:
    static = FeatureLayout.for_class(plant.classes[equipment_class])
    signals = np.vstack([static.signal_block(np.nan_to_num(s.values)) for s in streams])[:200_000]
    autocorrelation = float(np.median(lag1_autocorrelation(signals)))
    dynamic = FeatureLayout.for_class(plant.classes[equipment_class], lags=1)
    if autocorrelation > DYNAMIC_AUTOCORRELATION and rows >= 2 * min_rows(dynamic):
        return dynamic
    return static


def fit(
    plant: PlantModel,
    streams_by_class: dict[str, list[Stream]],
    *,
    targets: Targets = DEFAULT_TARGETS,
    contexts: Contexts = "auto",
    seed: int = 0,
) -> tuple[dict[str, ClassModel], list[str]]:
    """Models by key (`class` or `class@context`), and what could not be trained and why."""
    models: dict[str, ClassModel] = {}
    refused: list[str] = []
    for name, streams in sorted(streams_by_class.items()):
        period = sample_period(streams)
        pieces = [p for s in streams for p in _pieces(s, period)]
        rows = int(sum(p.scoreable.sum() for p in pieces))
        layout = choose_layout(plant, name, pieces, rows)
        groups: dict[str | None, list[Stream]] = {None: pieces}
        by_context: dict[str | None, list[Stream]] = defaultdict(list)
        for piece in pieces:
            by_context[piece.context].append(piece)
        if contexts == "auto" and len(by_context) > 1:
            groups |= by_context
        for context, group in groups.items():
            label = name if context is None else f"{name}@{context}"
            block, lengths = _feature_runs(group, layout, period)
            have, need = sum(lengths), min_rows(layout)
            if block is None or have < need:
                if context is None:
                    refused.append(
                        f"{label}: {have} normal running samples; a model of {len(layout.names)} features needs at "
                        f"least {need} (five per feature, and enough for its calibration): give it more normal data"
                    )
                continue
            model = calibrate(name, context, layout, period, block, lengths, targets=targets, seed=seed)
            model.recipes_not_learned = sorted(set(plant.classes[name].recipes) - {piece.context for piece in group})
            models[model.key] = model
            log.info("model trained", extra={"model": model.key, **model.calibration})
    return models, refused


def train_version(
    plant: PlantModel,
    frames: Iterable[TelemetryFrame],
    source: dict[str, Any],
    root: Path,
    key: bytes,
    roles: Iterable[registry.Role] = (),
    *,
    targets: Targets = DEFAULT_TARGETS,
    contexts: Contexts = "auto",
    seed: int = 0,
) -> tuple[str, dict[str, ClassModel], list[str]]:
    """Fit, sign and save a model version; point the given roles (ACTIVE, CANDIDATE) at it."""
    models, refused = fit(plant, collect(plant, frames), targets=targets, contexts=contexts, seed=seed)
    if not models:
        reasons = "; ".join(refused) or "no running samples of any equipment class"
        raise ValueError(f"nothing to train: {reasons}")
    root.mkdir(parents=True, exist_ok=True)
    version = registry.save(root, key, models, source)
    for role in roles:
        registry.point(root, role, version)
    return version, models, refused
