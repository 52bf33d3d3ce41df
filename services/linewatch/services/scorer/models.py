"""Detectors for one equipment class (or one run context of it), fitted on normal operation and calibrated so
that the unit's false alarms after the debounce stay at a stated rate.

Detectors, each on standardised features (`features.py`):
* t2 and spe: PCA Hotelling T2 in the retained components and the squared prediction error in the residual;
  components kept when they hold more variance than one variable and than the Marchenko-Pastur edge of noise;
* drift: the SPE of the exponentially smoothed features, and each feature's smoothed residual (a slow ramp, a
  sensor drifting away from its neighbours). Smoothed levels themselves are not watched: slow normal wander
  lives there, and a start-up's tail;
* iforest: IsolationForest (scikit-learn) on the same features, for what is not linear;
* univariate: each signal's change since the previous sample against its own normal changes (rates, not
  levels: levels that wander slowly are normal; they are for the configured spec limits);
* data quality: a sensor missing from a sample, or a measurement (not a state) stuck for over twice any run of equal
  values in training.

Calibration (blocked cross-validation): the rows are cut into contiguous folds; each fold is scored by a
model fitted on the others, so every normal row gets an honest out-of-sample score with its autocorrelation
intact. Each detector is scaled by its 95th percentile there and the detectors combine into one statistic,
their maximum. The smoothed features' SPE is left out where its held-out values rest on fewer than
`MIN_INDEPENDENT_ROWS` independent rows: with a few hundred rows of a slowly wandering process it sums the
wander of every variable the model had too few rows to learn, and most false alarms on fresh data were its.
A sample is anomalous when that statistic has stayed at or above the threshold for `debounce`
samples, so the threshold is set on the debounced statistic (its running minimum) at the target false-alarm
rate: empirically where the data show that rate, and by an exponential tail fitted to the top 10 % where they
do not (said in the calibration report). The threshold also holds false alerts (runs of alarming samples) to a
number a week: a Gumbel fit to the statistic's hourly maxima. Extrapolated thresholds are taken at the upper 95 %
confidence bound of their estimate, so that little data errs towards fewer false alarms. Scores are
statistic / threshold: 1.0 is the alarm level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from linewatch.services.scorer.features import EWMA_LAMBDA, FeatureBlock, FeatureLayout

DETECTORS = ("t2", "spe", "drift", "iforest", "univariate")
RAW = ("t2", "spe", "spe_smooth", "bias", "iforest", "rate", "rough")
DATA_QUALITY_SCORE = 2.0
FOLDS = 5
MIN_FOLD_ROWS = 40
SHARED_FOREST_ROWS = 100 * 256  # rows from which each of the forest's 100 trees of 256 rows sees a row once on average
SETTLE_BIN = 10
# Independent rows (by the lag-1 autocorrelation) the smoothed SPE's held-out values need for it to be used.
MIN_INDEPENDENT_ROWS = 30
STATE_LEVELS = 5  # a sensor with no more distinct values than this in training reports a state (open/closed, 1/2)
TAIL_SHARE = 0.10  # the exponential tail is fitted to the top 10 % of the debounced statistic
UPPER_BOUND = 1.645  # extrapolated thresholds are taken at the 95 % upper confidence bound of their estimate
ARRAYS = (
    "mean",
    "scale",
    "components",
    "eigenvalues",
    "residual_scale",
    "smooth_residual_scale",
    "rate_scale",
    "stuck_limit",
)


@dataclass(frozen=True)
class Targets:
    """What the calibration holds a unit's false alarms to (whichever is stricter): the share of its normal
    samples that alarm after the debounce, and the alerts a week (a run of alarming samples is one alert):
    at 1 s sampling the second binds, at minutes the first."""

    false_alarm_rate: float = 0.005
    false_alerts_per_week: float = 0.5


def min_rows(layout: FeatureLayout) -> int:
    """Normal rows a model of this size needs: five per feature, and two calibration folds of MIN_FOLD_ROWS."""
    return max(5 * len(layout.names), 2 * MIN_FOLD_ROWS)


@dataclass
class Detection:
    """Per sample: each detector and the combined score relative to the alarm level (1.0), data quality."""

    t2: np.ndarray
    spe: np.ndarray
    drift: np.ndarray
    iforest: np.ndarray
    univariate: np.ndarray
    score: np.ndarray
    flatline: np.ndarray  # rows x sensors, bool
    contribution: np.ndarray  # rows x sensors


@dataclass
class ClassModel:
    equipment_class: str
    context: str | None
    layout: FeatureLayout
    period_s: float
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    residual_scale: np.ndarray
    smooth_residual_scale: np.ndarray
    rate_scale: np.ndarray
    stuck_limit: np.ndarray
    forest: IsolationForest
    normalizers: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RAW, 1.0))
    threshold: float = 1.0
    debounce: int = 3
    settle: int = 0  # samples after a stream begins (start-up, recipe change, gap) before they are scored
    calibration: dict[str, Any] = field(default_factory=dict)
    # Recipes the plant file gives its class (each with its own setpoints) that its training data never ran.
    recipes_not_learned: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # raw statistics too few independent rows could calibrate

    @cached_property
    def flat_forest(self) -> FlatForest:
        return FlatForest.of(self.forest)

    @property
    def sensors(self) -> list[str]:
        return self.layout.sensors

    @property
    def key(self) -> str:
        return self.equipment_class if self.context is None else f"{self.equipment_class}@{self.context}"

    def parts(self, block: FeatureBlock) -> dict[str, np.ndarray]:
        """The raw detector statistics and the residuals behind them."""
        z = (block.features - self.mean) / self.scale
        scores = z @ self.components.T
        residual = z - scores @ self.components
        smooth = (block.smoothed - self.mean) / self.scale
        smooth_residual = (smooth - (smooth @ self.components.T) @ self.components) / self.smooth_residual_scale
        smooth_residual[~block.smooth_warm] = 0.0  # not yet smoothed: no evidence of drift either way
        rates = np.abs(np.nan_to_num(block.rates)) / self.rate_scale
        roughness = np.sqrt(block.roughness) / self.rate_scale
        roughness[~block.smooth_warm] = 0.0
        return {
            "t2": np.sum(scores**2 / self.eigenvalues, axis=1),
            "spe": np.sum(residual**2, axis=1),
            "spe_smooth": np.sum(smooth_residual**2, axis=1),
            "bias": np.abs(smooth_residual).max(axis=1),
            "iforest": self.flat_forest.scores(z),
            "rate": rates.max(axis=1),
            "rough": roughness.max(axis=1),
            "residual": residual / self.residual_scale,
            "smooth_residual": smooth_residual,
            "rates": rates,
            "roughness": roughness,
        }

    def combined(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each detector scaled by its normal 95th percentile; `score` is their maximum (before the threshold)."""
        scaled = {
            name: np.zeros(len(parts[name])) if name in self.left_out else parts[name] / self.normalizers[name]
            for name in RAW
        }
        detectors = {
            "t2": scaled["t2"],
            "spe": scaled["spe"],
            "drift": np.maximum(scaled["spe_smooth"], scaled["bias"]),
            "iforest": scaled["iforest"],
            "univariate": np.maximum(scaled["rate"], scaled["rough"]),
        }
        return detectors | {"score": np.maximum.reduce(list(detectors.values()))}

    def detect(self, block: FeatureBlock) -> Detection:
        parts = self.parts(block)
        detectors = {name: value / self.threshold for name, value in self.combined(parts).items()}
        flatline = block.unchanged >= self.stuck_limit
        quality = np.where(flatline.any(axis=1), DATA_QUALITY_SCORE, 0.0)
        signals = len(self.layout.signals)
        per_feature = np.maximum.reduce(
            [
                parts["residual"][:, :signals] ** 2,
                parts["smooth_residual"][:, :signals] ** 2,
                parts["rates"] ** 2,
                parts["roughness"] ** 2,
            ]
        )
        owner = self.layout.owner[:signals]
        contribution = np.zeros((len(per_feature), len(self.sensors)))
        np.maximum.at(contribution.T, owner, per_feature.T)
        return Detection(
            t2=detectors["t2"],
            spe=detectors["spe"],
            drift=detectors["drift"],
            iforest=detectors["iforest"],
            univariate=detectors["univariate"],
            score=np.maximum(detectors["score"], quality),
            flatline=flatline,
            contribution=contribution,
        )


def pick(models: dict[str, ClassModel], equipment_class: str, context: str | None) -> ClassModel | None:
    """The model of the frame's run context (its recipe) where there is one, else the class's pooled model, unless
    the context is one of the plant's recipes that model never ran: that is not scored, rather than alarmed on at
    every changeover to it (a mill's other recipe runs 100 rpm faster: hundreds of times the threshold). Other
    contexts (a CSV run's file, an experiment) are more of the same process: the pooled model scores them."""
    specific = models.get(f"{equipment_class}@{context}") if context else None
    if specific is not None:
        return specific
    pooled = models.get(equipment_class)
    if pooled is None or context in pooled.recipes_not_learned:
        return None
    return pooled


@dataclass(frozen=True)
class FlatForest:
    """A fitted IsolationForest's trees in flat arrays, walked level by level for all trees and rows at once:
    sklearn walks one tree a call (about 9 us each, so ~1 ms a call whatever the rows, most of a live batch's
    scoring) and scores 500 rows no faster either. Leaves loop to themselves, so every row takes the forest's
    depth in steps. Same arithmetic as sklearn 1.9's `score_samples`; tests check the two agree."""

    feature: np.ndarray  # per node: the column it splits (0 at a leaf)
    threshold: np.ndarray  # per node: a row goes right when its value is above (+inf at a leaf)
    children: np.ndarray  # per node: left, right (a leaf: itself twice)
    depth_at: np.ndarray  # per node: the path length a row ending there counts (sklearn's, leaves only)
    roots: np.ndarray
    depth: int
    denominator: float

    CHUNK_ROWS = 256  # rows walked together: larger blocks leave the cache

    @classmethod
    def of(cls, forest: IsolationForest) -> FlatForest:
        from sklearn.ensemble._iforest import _average_path_length

        feature, threshold, children, depth_at, roots = [], [], [], [], []
        offset, depth = 0, 0
        for tree, columns, path_lengths, average_lengths in zip(
            forest.estimators_,
            forest.estimators_features_,
            forest._decision_path_lengths,
            forest._average_path_length_per_tree,
            strict=True,
        ):
            nodes = tree.tree_
            leaf = nodes.children_left == -1
            itself = np.arange(nodes.node_count) + offset
            feature.append(np.where(leaf, 0, np.asarray(columns)[np.where(leaf, 0, nodes.feature)]))
            threshold.append(np.where(leaf, np.inf, nodes.threshold))
            left = np.where(leaf, itself, nodes.children_left + offset)
            right = np.where(leaf, itself, nodes.children_right + offset)
            children.append(np.stack([left, right], axis=1).ravel())
            depth_at.append(path_lengths + average_lengths - 1.0)
            roots.append(offset)
            offset, depth = offset + nodes.node_count, max(depth, nodes.max_depth)
        return cls(
            feature=np.concatenate(feature).astype(np.intp),
            threshold=np.concatenate(threshold),
            children=np.concatenate(children).astype(np.intp),
            depth_at=np.concatenate(depth_at),
            roots=np.array(roots, dtype=np.intp),
            depth=depth,
            denominator=float(len(forest.estimators_) * _average_path_length([forest._max_samples])[0]),
        )

    def scores(self, features: np.ndarray) -> np.ndarray:
        """-IsolationForest.score_samples(features)."""
        # sklearn compares the float32 row with the float64 threshold
        data = np.asarray(features, dtype=np.float32).astype(np.float64)
        if self.denominator == 0:
            return np.ones(len(data))
        depths = np.empty(len(data))
        for start in range(0, len(data), self.CHUNK_ROWS):
            chunk = data[start : start + self.CHUNK_ROWS]
            node = np.repeat(self.roots[None], len(chunk), axis=0)
            row_start = (np.arange(len(chunk)) * data.shape[1])[:, None]
            values = chunk.ravel()
            for _ in range(self.depth):
                goes_right = values[row_start + self.feature[node]] > self.threshold[node]
                node = self.children[2 * node + goes_right]
            depths[start : start + len(chunk)] = self.depth_at[node].sum(axis=1)
        return np.asarray(2.0 ** (-depths / self.denominator))


# -- fitting ------------------------------------------------------------------------------------------------


def lag1_autocorrelation(values: np.ndarray) -> np.ndarray:
    """Per column; 0 for a constant column."""
    centred = values - values.mean(axis=0)
    # einsum: no n x columns temporaries beside `centred` (training calls this on every row of a class)
    denominator = np.einsum("ij,ij->j", centred, centred)
    numerator = np.einsum("ij,ij->j", centred[1:], centred[:-1])
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def smoothing_gain(autocorrelation: np.ndarray) -> np.ndarray:
    """Variance of the exponentially weighted mean over the variance of its input, for an AR(1) input."""
    rho, keep = np.clip(autocorrelation, -0.99, 0.999), 1 - EWMA_LAMBDA
    return np.asarray(EWMA_LAMBDA / (2 - EWMA_LAMBDA) * (1 + keep * rho) / (1 - keep * rho))


def effective_rows(rows: int, autocorrelation: float) -> float:
    """Rows worth of independent samples for an AR(1)-like series with this lag-1 autocorrelation."""
    rho = min(max(autocorrelation, 0.0), 0.999)
    return max(rows * (1 - rho) / (1 + rho), 1.0)


def fit_model(
    equipment_class: str,
    context: str | None,
    layout: FeatureLayout,
    period_s: float,
    block: FeatureBlock,
    debounce: int,
    seed: int = 0,
    forest: IsolationForest | None = None,
) -> ClassModel:
    """Fit every detector's parameters on normal rows (no thresholds yet); `forest`: one already fitted."""
    features = block.features
    mean = features.mean(axis=0)
    spread = features.std(axis=0)
    scale = np.where(spread > 1e-9 * np.maximum(1.0, np.abs(mean)), spread, 1.0)
    z = features - mean
    z /= scale
    # From the features' covariance, not an SVD of every row: the same components, without an n x features copy.
    pca = PCA(svd_solver="covariance_eigh").fit(z)
    variances = pca.explained_variance_
    # Components with more variance than one variable (Kaiser-Guttman) and than pure noise could show with this
    # many rows (the Marchenko-Pastur edge): shared variation, not one sensor's own noise or sampling luck.
    edge = max(1.0, (1 + math.sqrt(z.shape[1] / len(z))) ** 2)
    keep = int(np.clip(np.sum(variances > edge), 1, max(1, z.shape[1] - 1)))
    components = pca.components_[:keep]
    eigenvalues = np.maximum(variances[:keep], 1e-9)
    scores = z @ components.T
    residual = scores @ components
    np.subtract(z, residual, out=residual)
    rates = np.nan_to_num(block.rates)
    mad = 1.4826 * np.median(np.abs(rates - np.median(rates, axis=0)), axis=0)
    rate_scale = np.maximum.reduce([mad, 0.5 * rates.std(axis=0), 1e-9 * scale[: rates.shape[1]]])
    sensors = len(layout.sensors)
    stuck = block.unchanged.max(axis=0) if len(block.unchanged) else np.zeros(sensors)
    # A valve's or a pump's state stays put as long as the process wants: only a measurement can be stuck.
    discrete = np.array([len(np.unique(block.features[:, j])) <= STATE_LEVELS for j in range(sensors)], bool)
    if forest is None:
        forest = IsolationForest(n_estimators=100, max_samples=min(256, len(z)), random_state=seed).fit(z)
    return ClassModel(
        equipment_class=equipment_class,
        context=context,
        layout=layout,
        period_s=period_s,
        mean=mean,
        scale=scale,
        components=components,
        eigenvalues=eigenvalues,
        residual_scale=np.maximum(residual.std(axis=0), 1e-6),
        # The smoothed residuals' spread from the raw one and its autocorrelation (steadier than measuring it on
        # the smoothed rows, of which there are few independent ones).
        smooth_residual_scale=np.maximum(
            residual.std(axis=0) * np.sqrt(smoothing_gain(lag1_autocorrelation(residual))), 1e-6
        ),
        rate_scale=np.where(rate_scale > 0, rate_scale, 1.0),
        stuck_limit=np.where(discrete, np.inf, 2 * stuck + 3).astype(float),
        forest=forest,
        debounce=debounce,
    )


def folds(run_lengths: list[int], count: int) -> list[np.ndarray]:
    """Row indices of `count` folds: each run cut into `count` contiguous parts, part k of every run in fold k."""
    parts: list[list[np.ndarray]] = [[] for _ in range(count)]
    start = 0
    for length in run_lengths:
        for k, piece in enumerate(np.array_split(np.arange(start, start + length), count)):
            parts[k].append(piece)
        start += length
    return [np.concatenate(p) for p in parts]


def debounced(score: np.ndarray, run_lengths: list[int], debounce: int) -> np.ndarray:
    """Per run, the running minimum over `debounce` samples: a sample alarms when this reaches the threshold.
    Rows without `debounce` samples of their run before them are left out."""
    out = []
    start = 0
    for length in run_lengths:
        run = score[start : start + length]
        if length >= debounce:
            out.append(np.lib.stride_tricks.sliding_window_view(run, debounce).min(axis=-1))
        start += length
    return np.concatenate(out) if out else np.zeros(0)


def tail_threshold(values: np.ndarray, rate: float) -> tuple[float, bool]:
    """The level a share `rate` of `values` exceeds, and whether it was extrapolated: empirical where at least
    ten values lie beyond it, else from an exponential tail fitted to the top TAIL_SHARE (never below the
    empirical quantile)."""
    n = len(values)
    empirical = float(np.quantile(values, 1 - rate)) if rate < 1 else float(values.min())
    if rate * n >= 10:
        return empirical, False
    u = float(np.quantile(values, 1 - TAIL_SHARE))
    excess = values[values > u] - u
    # The tail's mean excess at its 95 % upper confidence bound: few values in the tail, a higher threshold.
    beta = float(excess.mean()) * (1 + UPPER_BOUND / math.sqrt(len(excess))) if len(excess) else 0.0
    return max(u + beta * math.log(TAIL_SHARE / rate), empirical), True


def block_maxima_threshold(
    series: np.ndarray, run_lengths: list[int], period_s: float, alerts_per_week: float
) -> tuple[float, float]:
    """The level the debounced statistic's maximum over an hour (at least 10 samples) exceeds in no more than
    `alerts_per_week` hours a week: a Gumbel fit to the hourly maxima (extreme values of exponential-tailed
    statistics). Returns the level and the block length in samples."""
    block = int(max(10, round(3600 / period_s)))
    maxima = [
        run[i : i + block].max()
        for run in np.split(series, np.cumsum(run_lengths)[:-1])
        for i in range(0, len(run) - block + 1, block)
    ]
    if len(maxima) < 5:  # too little data for the fit: the whole series' maximum
        return float(series.max()) if len(series) else 0.0, float(block)
    exceed = min(alerts_per_week * block * period_s / (7 * 86400), 0.5)
    spread = float(np.std(maxima)) * math.sqrt(6) / math.pi
    location = float(np.mean(maxima)) - 0.5772 * spread
    reduced = -math.log(-math.log(1 - exceed))
    # The quantile's standard error for a moment fit (Gumbel, 1958): with few hours of data the threshold moves
    # up by its 95 % upper confidence bound, so little data errs towards fewer false alerts.
    error = spread * math.sqrt((1.11 + 0.52 * reduced + 0.61 * reduced**2) / len(maxima))
    return location + spread * reduced + UPPER_BOUND * error, float(block)


def learned_settle(score: np.ndarray, positions: np.ndarray, run_lengths: list[int]) -> int:
    """Samples after a stream begins that its statistic takes to settle, where the data show a start-up
    transient: the first bins of SETTLE_BIN samples in which most starts exceed the steady 99.9 % level.
    Needs at least three starts; a single start's excursion is chance, not a transient."""
    runs = [run for run in np.split(np.arange(len(score)), np.cumsum(run_lengths)[:-1]) if positions[run[0]] <= 2]
    if len(runs) < 3:
        return 0
    horizon = int(min(2000, np.median([len(run) for run in runs]) // 4))
    steady = score[positions >= horizon]
    if len(steady) < 1000:
        return 0
    level = float(np.quantile(steady, 0.999))
    settle = 0
    for begin in range(0, horizon, SETTLE_BIN):
        maxima = [score[run[begin : begin + SETTLE_BIN]].max() for run in runs if len(run) >= begin + SETTLE_BIN]
        if len(maxima) < 3 or np.mean(np.array(maxima) > level) < 0.5:
            break
        settle = int(positions[runs[0][0]]) + begin + SETTLE_BIN
    return settle


def calibrate(
    equipment_class: str,
    context: str | None,
    layout: FeatureLayout,
    period_s: float,
    block: FeatureBlock,
    lengths: list[int],
    *,
    targets: Targets,
    debounce: int = 3,
    seed: int = 0,
) -> ClassModel:
    """Fit on normal runs (each a continuous stream, warm rows only; `block` holds them one after the other, each
    `lengths` long) and calibrate the alarm threshold."""
    runs = len(lengths)
    count = int(min(FOLDS, max(2, len(block.features) // MIN_FOLD_ROWS)))
    raw = {name: np.zeros(len(block.features)) for name in RAW}
    final = fit_model(equipment_class, context, layout, period_s, block, debounce, seed)
    # With this many rows a row is in few of the forest's 256-row trees: its in-sample isolation score is as good as a
    # held-out one, and one forest instead of one per fold is most of the training time saved.
    shared = final.forest if len(block.features) >= SHARED_FOREST_ROWS else None
    for held_out in folds(lengths, count):
        keep = np.ones(len(block.features), dtype=bool)
        keep[held_out] = False
        kept = block.take(np.flatnonzero(keep))
        model = fit_model(equipment_class, context, layout, period_s, kept, debounce, seed, shared)
        parts = model.parts(block.take(held_out))
        for name in RAW:
            raw[name][held_out] = parts[name]
    final.normalizers = {name: max(float(np.quantile(raw[name], 0.95)), 1e-12) for name in RAW}
    smooth_spe = raw["spe_smooth"]
    smooth_spe_rows = effective_rows(len(smooth_spe), float(lag1_autocorrelation(smooth_spe[:, None])[0]))
    if smooth_spe_rows < MIN_INDEPENDENT_ROWS:
        final.left_out = ["spe_smooth"]
    score = final.combined(raw)["score"]
    # Start-up transients the plant's settle time does not cover are learned, then neither scored nor calibrated on.
    final.settle = learned_settle(score, block.position, lengths)
    steady = block.position >= final.settle
    kept_lengths = [int(part.sum()) for part in np.split(steady, np.cumsum(lengths)[:-1])]
    score, lengths = score[steady], [n for n in kept_lengths if n]
    series = debounced(score, lengths, debounce)
    false_alarm_rate = targets.false_alarm_rate
    by_rate, extrapolated = tail_threshold(series, false_alarm_rate)
    debounced_lengths = [length - debounce + 1 for length in lengths if length >= debounce]
    by_alerts, hour = block_maxima_threshold(series, debounced_lengths, period_s, targets.false_alerts_per_week)
    final.threshold = max(by_rate, by_alerts, 1e-12)
    n_eff = effective_rows(len(series), float(lag1_autocorrelation(series[:, None])[0]))
    held_out_rate = float(np.mean(series >= final.threshold))
    final.calibration = {
        "rows": len(block.features),
        "runs": runs,
        "features": len(layout.names),
        "lags": layout.lags,
        "components": len(final.eigenvalues),
        "settle_samples": final.settle,
        "period_s": period_s,
        "folds": count,
        "debounce": debounce,
        "target_false_alarm_pct": 100 * false_alarm_rate,
        "held_out_false_alarm_pct": 100 * held_out_rate,
        "effective_rows": n_eff,
        "extrapolated": extrapolated,
        # How far the target lies beyond what the data can show (>1: the tail fit carries it).
        "extrapolation_factor": 1.0 / (false_alarm_rate * n_eff),
        "target_false_alerts_per_week": targets.false_alerts_per_week,
        "bound_by": "false alerts per week" if by_alerts > by_rate else "false-alarm rate",
        "samples_per_maxima_block": hour,
        "threshold": final.threshold,
        "normalizers": final.normalizers,
        "left_out": final.left_out,
        "smooth_spe_effective_rows": smooth_spe_rows,
    }
    return final
