"""Detectors for one equipment class, fitted on normal operation and calibrated on held-out normal data.

* PCA on standardised features: Hotelling T2 in the retained components and SPE (Q) in the residual;
* IsolationForest on the same standardised features;
* robust univariate z-scores (median / MAD), each feature with its own threshold;
* data quality: sensors missing from a sample, sensors flat-lined (rolling std below any seen in training).

Each threshold is the largest value the statistic reached on the held-out data (its `calibration_window`-
sample running minimum, 1 = the raw value), times `margin`: no held-out sample scored above 1. Operation
adds the debounce (score >= 1 for `debounce` samples in a row), which keeps false alarms below that rate.
Scores are statistic / threshold, so 1.0 means "at the threshold".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from linewatch.services.scorer.features import FeatureLayout

MULTIVARIATE = ("t2", "spe", "iforest")
EXPLAINED_VARIANCE = 0.95
DATA_QUALITY_SCORE = 2.0


@dataclass
class Detection:
    """Normalised scores for a batch of rows."""

    t2: np.ndarray
    spe: np.ndarray
    iforest: np.ndarray
    univariate: np.ndarray
    flatline: np.ndarray  # rows x sensors, bool
    contribution: np.ndarray  # rows x sensors

    @property
    def score(self) -> np.ndarray:
        quality = np.where(self.flatline.any(axis=1), DATA_QUALITY_SCORE, 0.0)
        return np.asarray(np.maximum.reduce([self.t2, self.spe, self.iforest, self.univariate, quality]))


@dataclass
class ClassModel:
    equipment_class: str
    layout: FeatureLayout
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    median: np.ndarray
    mad: np.ndarray
    feature_thresholds: np.ndarray
    flatline_floor: np.ndarray
    thresholds: dict[str, float]
    forest: IsolationForest
    debounce: int
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def sensors(self) -> list[str]:
        return self.layout.sensors

    def pca(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised features, Hotelling T2 and SPE."""
        z = (features - self.mean) / self.scale
        projected = z @ self.components.T
        residual = z - projected @ self.components
        return z, np.sum(projected**2 / self.eigenvalues, axis=1), np.sum(residual**2, axis=1)

    def raw(self, features: np.ndarray) -> dict[str, np.ndarray]:
        z, t2, spe = self.pca(features)
        return {
            "t2": t2,
            "spe": spe,
            "iforest": isolation_scores(self.forest, z),
            "robust": np.abs(features - self.median) / self.mad,
        }

    def detect(self, features: np.ndarray) -> Detection:
        stats = self.raw(features)
        univariate = stats["robust"] / self.feature_thresholds
        per_sensor = np.column_stack([univariate[:, columns].max(axis=1) for columns in self.layout.of_sensor])
        return Detection(
            t2=stats["t2"] / self.thresholds["t2"],
            spe=stats["spe"] / self.thresholds["spe"],
            iforest=stats["iforest"] / self.thresholds["iforest"],
            univariate=univariate.max(axis=1),
            flatline=features[:, self.layout.std_columns] < self.flatline_floor,
            contribution=per_sensor,
        )


def isolation_scores(forest: IsolationForest, features: np.ndarray) -> np.ndarray:
    """-IsolationForest.score_samples(features), computed tree by tree without sklearn's per-tree joblib dispatch,
    which costs ~130 us a tree whatever the batch size (14 ms a frame for 100 trees, most of the scorer's time).
    Same arithmetic as sklearn 1.9's `_compute_score_samples`; tests/test_scorer.py checks the two agree."""
    from sklearn.ensemble._iforest import _average_path_length

    data = np.asarray(features, dtype=np.float32)
    subsample = forest._max_features != data.shape[1]
    depths = np.zeros(len(data))
    for tree, columns, path_lengths, average_lengths in zip(
        forest.estimators_,
        forest.estimators_features_,
        forest._decision_path_lengths,
        forest._average_path_length_per_tree,
        strict=True,
    ):
        subset = np.ascontiguousarray(data[:, columns] if subsample else data)
        leaves = tree.tree_.apply(subset)
        depths += path_lengths[leaves] + average_lengths[leaves] - 1.0
    denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])[0]
    if denominator == 0:
        return np.ones(len(data))
    return np.asarray(2.0 ** (-depths / denominator))


def running_min(values: np.ndarray, window: int) -> np.ndarray:
    """Running minimum along axis 0: the value a statistic held for `window` rows in a row."""
    if window <= 1 or len(values) < window:
        return values
    return np.asarray(np.lib.stride_tricks.sliding_window_view(values, window, axis=0).min(axis=-1))


def fit_class_model(
    equipment_class: str,
    layout: FeatureLayout,
    train: np.ndarray,
    calibration_segments: list[np.ndarray],
    *,
    debounce: int = 5,
    calibration_window: int = 1,
    margin: float = 1.1,
    seed: int = 0,
) -> ClassModel:
    """`train`: rows of normal features; `calibration_segments`: held-out normal rows, one contiguous
    array per unit (the debounce runs along time)."""
    mean = train.mean(axis=0)
    scale = train.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (train - mean) / scale
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    variance = singular**2 / max(len(z) - 1, 1)
    keep = int(np.searchsorted(np.cumsum(variance) / variance.sum(), EXPLAINED_VARIANCE) + 1)
    keep = min(max(keep, 1), z.shape[1] - 1)
    median = np.median(train, axis=0)
    mad = np.maximum(1.4826 * np.median(np.abs(train - median), axis=0), 0.05 * scale + 1e-12)
    lowest_std = np.percentile(train[:, layout.std_columns], 0.1, axis=0)
    flatline_floor = np.where(lowest_std > 0, 0.2 * lowest_std, 0.0)
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=seed).fit(z)
    model = ClassModel(
        equipment_class=equipment_class,
        layout=layout,
        mean=mean,
        scale=scale,
        components=vt[:keep],
        eigenvalues=variance[:keep],
        median=median,
        mad=mad,
        feature_thresholds=np.ones(z.shape[1]),
        flatline_floor=flatline_floor,
        thresholds=dict.fromkeys(MULTIVARIATE, 1.0),
        forest=forest,
        debounce=debounce,
    )
    peaks = dict.fromkeys(MULTIVARIATE, 0.0)
    feature_peaks = np.zeros(z.shape[1])
    rows = 0
    for segment in calibration_segments:
        if len(segment) < calibration_window:
            continue
        stats = model.raw(segment)
        rows += len(segment)
        for name in MULTIVARIATE:
            peaks[name] = max(peaks[name], float(running_min(stats[name], calibration_window).max()))
        feature_peaks = np.maximum(feature_peaks, running_min(stats["robust"], calibration_window).max(axis=0))
    model.thresholds = {name: max(peak, 1e-9) * margin for name, peak in peaks.items()}
    model.feature_thresholds = np.maximum(feature_peaks, 1.0) * margin
    model.calibration = {
        "train_rows": len(train),
        "calibration_rows": rows,
        "components": keep,
        "features": int(z.shape[1]),
        "debounce": debounce,
        "calibration_window": calibration_window,
        "margin": margin,
        "peaks": peaks,
        "alarms_on_calibration_data": 0,
    }
    return model
