"""`linewatch bench detection`: linewatch and a textbook PCA monitor on the synthetic corpus (`corpus.py`), in
the same run, each process taken the way a new user would: CSV files, `plant draft`, training with the
default settings, scoring.

Per process: linewatch's false-alarm rate on fresh normal data recorded after the training period, and its
recall on the faulty run at its own calibrated thresholds (every faulty sample counts; an unscored sample is
not flagged); the textbook monitor's false-alarm rate at its 99 % limits, and its recall with its threshold
moved (knowing the fresh data) to give exactly linewatch's false-alarm rate: recall at matched false-alarm rate.

Textbook monitor: standardised variables, PCA keeping 90 % of the variance, Hotelling T2 limit from the F
distribution and SPE (Q) limit by Jackson and Mudholkar (Box's approximation where that does not apply), both
at 99 %; a sample is flagged when either is exceeded.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats

from linewatch.core.console import out
from linewatch.core.plant import PlantModel
from linewatch.services.scorer import evaluate, training
from linewatch.services.scorer.models import Targets
from linewatch.storage import historian
from linewatch.tools import corpus, plantfile

EQUIPMENT = "UNIT-1"
LABEL = "fault"


FIGURES = ("linewatch_far", "linewatch_recall", "pca_far", "pca_recall")


class TextbookPca:
    def __init__(self, train: np.ndarray, variance: float = 0.90, alpha: float = 0.01) -> None:
        self.mean = train.mean(axis=0)
        spread = train.std(axis=0, ddof=1)
        self.scale = np.where(spread > 0, spread, 1.0)
        z = (train - self.mean) / self.scale
        n, m = z.shape
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        eigenvalues = singular**2 / (n - 1)
        k = int(np.searchsorted(np.cumsum(eigenvalues) / eigenvalues.sum(), variance) + 1)
        self.k = min(k, m - 1)
        self.components, self.eigenvalues = vt[: self.k], eigenvalues[: self.k]
        self.t2_limit = self.k * (n - 1) * (n + 1) / (n * (n - self.k)) * stats.f.ppf(1 - alpha, self.k, n - self.k)
        rest = eigenvalues[self.k :]
        theta = [float(np.sum(rest**i)) for i in (1, 2, 3)]
        h0 = 1 - 2 * theta[0] * theta[2] / (3 * theta[1] ** 2)
        if h0 > 0:  # Jackson and Mudholkar
            c = stats.norm.ppf(1 - alpha)
            self.spe_limit = theta[0] * (
                c * math.sqrt(2 * theta[1] * h0**2) / theta[0] + 1 + theta[1] * h0 * (h0 - 1) / theta[0] ** 2
            ) ** (1 / h0)
        else:  # very unequal residual eigenvalues: Box's g chi2(h) approximation
            self.spe_limit = theta[1] / theta[0] * stats.chi2.ppf(1 - alpha, theta[0] ** 2 / theta[1])

    def statistic(self, values: np.ndarray) -> np.ndarray:
        """max(T2 / limit, SPE / limit): above 1 is flagged."""
        z = (values - self.mean) / self.scale
        scores = z @ self.components.T
        t2 = np.sum(scores**2 / self.eigenvalues, axis=1)
        spe = np.sum((z - scores @ self.components) ** 2, axis=1)
        return np.asarray(np.maximum(t2 / self.t2_limit, spe / self.spe_limit))


@dataclass
class Result:
    process: corpus.Process
    linewatch_far: float
    linewatch_recall: float
    pca_far: float
    pca_recall: float
    components: int
    notes: list[str]


def write_csv(path: Path, run: corpus.Run, separator: str) -> None:
    header = separator.join(["time", *(f"Var {j + 1}" for j in range(run.values.shape[1])), LABEL])
    lines = [header]
    for ts, row, faulty in zip(run.ts, run.values, run.faulty, strict=True):
        stamp = datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(separator.join([stamp, *(f"{v:.6g}" for v in row), "1.0" if faulty else "0.0"]))
    path.write_text("\n".join(lines) + "\n")


def flags(plant: PlantModel, models: dict[str, object], path: Path) -> np.ndarray:
    mapping = historian.CsvMapping([path], EQUIPMENT, label_column=LABEL)
    [run] = historian.csv_runs(mapping, plant)
    trace = evaluate.score_stream(plant, run.frames, models).get(EQUIPMENT, evaluate.Trace())  # type: ignore[arg-type]
    flagged = dict(zip(trace.ts, trace.anomalous, strict=True))
    return np.array([flagged.get(ts, False) for ts, _ in run.labels])


def run_process(process: corpus.Process, folder: Path, targets: Targets, seed: int = 0) -> Result:
    train, fresh, faulty = corpus.datasets(process, seed)
    paths = {name: folder / f"{process.name}-{name}.csv" for name in ("train", "fresh", "faulty")}
    for path, data in zip(paths.values(), (train, fresh, faulty), strict=True):
        write_csv(path, data, process.separator)
    document, notes = plantfile.draft([historian.read_table(paths["train"])], EQUIPMENT, None, False)
    plant = PlantModel.model_validate(document)
    [run] = historian.csv_runs(historian.CsvMapping([paths["train"]], EQUIPMENT), plant)
    models, refused = training.fit(plant, training.collect(plant, run.frames), targets=targets)
    if not models:
        raise RuntimeError(f"{process.name}: not trained: {refused}")
    fresh_flags, faulty_flags = flags(plant, models, paths["fresh"]), flags(plant, models, paths["faulty"])  # type: ignore[arg-type]
    monitor = TextbookPca(train.values)
    fresh_statistic, faulty_statistic = monitor.statistic(fresh.values), monitor.statistic(faulty.values)
    linewatch_far = float(fresh_flags.mean())
    # The textbook monitor's threshold where its false-alarm rate on the fresh data equals linewatch's.
    matched = float(np.quantile(fresh_statistic, 1 - linewatch_far)) if linewatch_far > 0 else fresh_statistic.max()
    return Result(
        process,
        linewatch_far,
        float(faulty_flags[faulty.faulty].mean()),
        float((fresh_statistic > 1).mean()),
        float((faulty_statistic[faulty.faulty] > matched).mean()),
        monitor.k,
        notes,
    )


def bench_detection(seeds: int = 1) -> int:
    """Each process with `seeds` draws of its data (its structure, training, fresh and faulty runs): per process the
    mean over them, and the worst false-alarm rate."""
    targets = Targets()
    results = []
    with tempfile.TemporaryDirectory(prefix="linewatch-bench-detection-") as folder:
        for process in corpus.PROCESSES:
            runs = [run_process(process, Path(folder), targets, seed) for seed in range(seeds)]
            averaged = {name: float(np.mean([getattr(run, name) for run in runs])) for name in FIGURES}
            results.append(Result(process, components=runs[0].components, notes=runs[0].notes, **averaged))
            r, worst = results[-1], max(run.linewatch_far for run in runs)
            out(
                f"{process.name:<14}{process.variables:>4} vars {process.period_s:>6g} s {process.train_rows:>5} rows  "
                f"linewatch far {100 * r.linewatch_far:5.2f} % recall {100 * r.linewatch_recall:5.1f} %   "
                f"pca far {100 * r.pca_far:5.2f} % recall at matched far {100 * r.pca_recall:5.1f} %"
                + (f"   ({seeds} seeds; worst linewatch far {100 * worst:5.2f} %)" if seeds > 1 else "")
            )
    limit = 1.5 * targets.false_alarm_rate
    far_ok = all(r.linewatch_far <= limit for r in results)
    recall_ok = all(r.linewatch_recall >= r.pca_recall for r in results)
    mean = {name: float(np.mean([getattr(r, name) for r in results])) for name in FIGURES}
    out(
        f"checks: false-alarm rate within 1.5 x {100 * targets.false_alarm_rate:g} % on every process: "
        f"{'yes' if far_ok else 'NO'}; recall at matched rate >= PCA on every process: {'yes' if recall_ok else 'NO'}; "
        f"higher on average: {'yes' if mean['linewatch_recall'] > mean['pca_recall'] else 'NO'}"
    )
    out(
        f"processes={len(results)} seeds={seeds} linewatch_far_pct={100 * mean['linewatch_far']:.3f} "
        f"pca_far_pct={100 * mean['pca_far']:.3f} linewatch_recall_at_matched_far={mean['linewatch_recall']:.3f} "
        f"pca_recall_at_matched_far={mean['pca_recall']:.3f}"
    )
    return 0
