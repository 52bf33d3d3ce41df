"""Fit one model per equipment class on normal frames: the first part of each unit's running periods
trains, the rest (held out) calibrates the thresholds."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.scorer import registry
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.features import FeatureLayout
from linewatch.services.scorer.models import ClassModel, fit_class_model

log = logging.getLogger(__name__)
TRAIN_SHARE = 0.6


def collect(plant: PlantModel, frames: Iterable[TelemetryFrame]) -> dict[str, dict[str, list[np.ndarray]]]:
    """Scoreable feature rows per class and unit, in time order, one array per frame."""
    scorer = PlantScorer(plant)
    rows: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for frame in frames:
        block = scorer.prepare(frame)
        if block is not None:
            rows[frame.equipment_class][frame.equipment_id].append(block.features)
    return rows


def fit(
    plant: PlantModel, rows: dict[str, dict[str, list[np.ndarray]]], seed: int = 0, min_rows: int = 500
) -> dict[str, ClassModel]:
    models = {}
    for name, units in sorted(rows.items()):
        train, calibration = [], []
        for blocks in units.values():
            unit_rows = np.vstack(blocks)
            cut = int(len(unit_rows) * TRAIN_SHARE)
            train.append(unit_rows[:cut])
            calibration.append(unit_rows[cut:])
        train_rows = np.vstack(train)
        if len(train_rows) < min_rows:
            log.warning("too little normal data, class not trained", extra={"class": name, "rows": len(train_rows)})
            continue
        layout = FeatureLayout.for_class(plant.classes[name])
        models[name] = fit_class_model(name, layout, train_rows, calibration, seed=seed)
        log.info("class trained", extra={"class": name, "rows": len(train_rows), **models[name].calibration})
    return models


def train_version(
    plant: PlantModel,
    frames: Iterable[TelemetryFrame],
    source: dict[str, Any],
    root: Path,
    key: bytes,
    roles: Iterable[registry.Role] = (),
    seed: int = 0,
) -> tuple[str, dict[str, ClassModel]]:
    """Fit, sign and save a model version; point the given roles (ACTIVE, CANDIDATE) at it."""
    models = fit(plant, collect(plant, frames), seed=seed)
    if not models:
        raise ValueError("no equipment class had enough normal running data to train")
    root.mkdir(parents=True, exist_ok=True)
    version = registry.save(root, key, models, source)
    for role in roles:
        registry.point(root, role, version)
    return version, models
