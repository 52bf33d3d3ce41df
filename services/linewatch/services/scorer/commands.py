"""`linewatch train | evaluate | models | bench scorer`."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.core.commandline import Commands, UsageError
from linewatch.core.console import out
from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.timeutil import TIME_FORMATS, utc_time
from linewatch.services.scorer import evaluate, registry, training
from linewatch.services.scorer.settings import ScorerSettings
from linewatch.simulation.faults import fault_catalogue_schedule
from linewatch.simulation.plant_sim import simulated
from linewatch.storage import historian
from linewatch.storage.historian import add_csv_arguments

log = logging.getLogger(__name__)
SIMULATION_EPOCH_DAYS_AGO = 30  # simulated training and evaluation runs lie in the past


def _sim_start(hours_back: float = 0.0) -> float:
    return math.floor(time.time() / 7200) * 7200 - SIMULATION_EPOCH_DAYS_AGO * 86400 - hours_back * 3600


def training_frames(
    args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel
) -> tuple[Any, dict[str, Any]]:
    if args.frames:
        return historian.frames_file(args.frames), {"source": "frames file", "path": str(args.frames)}
    if args.csv:
        runs = historian.csv_runs(historian.csv_mapping(args), plant)
        frames = [frame for run in runs for frame in run.frames]
        return frames, {"source": "csv", "files": [str(p) for p in args.csv], "equipment": args.equipment}
    if args.influx:
        if args.start is None or args.end is None:
            raise UsageError("training from InfluxDB needs --start and --end")
        window = {"source": "influxdb", "url": settings.influx.url, "start": args.start.isoformat()}
        return historian.influx(settings.influx, args.start, args.end, plant), window | {"end": args.end.isoformat()}
    return simulated_training(plant, args.hours, args.seed)


def simulated_training(plant: PlantModel, hours: float, seed: int) -> tuple[Iterator[TelemetryFrame], dict[str, Any]]:
    """The simulator's normal operation, in the past: the default training data."""
    first = _sim_start(hours)
    source = {
        "source": "simulator (normal operation)",
        "seed": seed,
        "hours": hours,
        "start": datetime.fromtimestamp(first, UTC).isoformat(),
    }
    return simulated(plant, first, hours, seed), source


def cmd_train(args: argparse.Namespace) -> int:
    settings = ScorerSettings()
    plant = load_plant(settings.plant_file)
    frames, window = training_frames(args, settings, plant)
    started = time.perf_counter()
    roles: list[registry.Role] = []
    if args.active:
        roles.append("ACTIVE")
    if args.candidate:
        roles.append("CANDIDATE")
    try:
        version, models = training.train_version(
            plant, frames, window, settings.registry, settings.signing_key(), roles, seed=args.seed
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out(
        f"trained {len(models)} classes in {time.perf_counter() - started:.0f} s: version {version} "
        f"in {settings.registry}" + (" (active)" if args.active else "") + (" (candidate)" if args.candidate else "")
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = ScorerSettings()
    if args.action in ("activate", "candidate"):
        if args.version is None:
            raise UsageError(f"models {args.action} needs a version: `linewatch models` lists them")
        role: registry.Role = "ACTIVE" if args.action == "activate" else "CANDIDATE"
        try:
            registry.activate(settings.registry, settings.signing_key(), args.version, role)
        except registry.ModelVerificationError as exc:
            raise UsageError(str(exc)) from None
    elif args.action == "clear-candidate":
        registry.point(settings.registry, "CANDIDATE", None)
    active, candidate = (registry.pointed(settings.registry, r) for r in ("ACTIVE", "CANDIDATE"))
    for folder in sorted(p for p in settings.registry.glob("*") if (p / "metadata.json").exists()):
        mark = " (active)" if folder.name == active else " (candidate)" if folder.name == candidate else ""
        out(f"{folder.name}{mark}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = ScorerSettings()
    plant = load_plant(settings.plant_file)
    version = args.model or registry.pointed(settings.registry, "ACTIVE")
    if version is None:
        out("no model: train one (`linewatch train --active`) or name one with --model")
        return 1
    models = registry.load(settings.registry, version, settings.signing_key())
    report = evaluate.Report()
    if args.csv:
        for run in historian.csv_runs(historian.csv_mapping(args), plant):
            labels = [evaluate.Label("labelled", args.equipment, a, b) for a, b in _label_windows(run.labels)]
            hours = (run.labels[-1][0] - run.labels[0][0]) / 3600 if run.labels else 0.0
            report.add_run(plant, evaluate.score_stream(plant, run.frames, models), labels, hours, lines=1)
    else:
        for index in range(args.seeds):
            seed = 1000 + index  # never the training seeds
            start = _sim_start(-24.0 * (index + 1))
            injections = fault_catalogue_schedule(plant, start, args.hours, seed, args.per_type)
            labels = [evaluate.Label(i.fault_name, i.equipment_id, i.start_s, i.end_s) for i in injections]
            frames = simulated(plant, start, args.hours, seed, injections)
            report.add_run(plant, evaluate.score_stream(plant, frames, models), labels, args.hours)
            normal = simulated(plant, start + args.hours * 3600 + 7200, args.hours, seed + 500)
            report.add_run(plant, evaluate.score_stream(plant, normal, models), [], args.hours)
    for line in report.table():
        out(line)
    summary = report.summary()
    out(
        f"model {version}; alerts {report.alerts_total}, false {report.false_alerts} in "
        f"{report.normal_line_hours:.0f} line-hours"
    )
    out(" ".join(f"{k}={v:.3g}" if k != "detected_pct" else f"{k}={v:.1f}" for k, v in summary.items()))
    return 0


def _label_windows(rows: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    windows: list[list[float]] = []
    for ts, fault in rows:
        if fault and windows and windows[-1][1] < 0:
            continue
        if fault:
            windows.append([ts, -1.0])
        elif windows and windows[-1][1] < 0:
            windows[-1][1] = ts
    return [(a, b if b >= 0 else rows[-1][0] + 1) for a, b in windows]


def cmd_bench(args: argparse.Namespace) -> int:
    settings = ScorerSettings()
    plant = load_plant(settings.plant_file)
    """Scoring throughput of one class model on one core: batched versus one sample per call."""
    name = args.equipment_class
    frames = (f for f in simulated(plant, _sim_start(3), 3, 1) if f.equipment_class == name)
    models = training.fit(plant, training.collect(plant, frames))
    model = models[name]
    rows = np.vstack(
        [
            np.vstack(b)
            for b in training.collect(
                plant, (f for f in simulated(plant, _sim_start(8), 2, 2) if f.equipment_class == name)
            )[name].values()
        ]
    )
    batch = rows[: args.batch]

    def rate(call: Any, data: np.ndarray, per_call: int, seconds: float = 2.0) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for i in range(0, len(data), per_call):
                call(data[i : i + per_call])
                done += len(data[i : i + per_call])
        return done / (time.perf_counter() - started)

    single_rows = batch[:2000]
    figures = {
        "pca": (rate(model.pca, batch, len(batch)), rate(model.pca, single_rows, 1)),
        "full": (rate(model.detect, batch, len(batch)), rate(model.detect, single_rows[:500], 1)),
    }
    out(
        f"class {name}: {len(model.layout.names)} features, {model.calibration['components']} PCA components, "
        f"IsolationForest 100 trees; batches of {len(batch):,} rows, one core"
    )
    out(f"PCA T2+SPE:        batched {figures['pca'][0]:>12,.0f}/s   one at a time {figures['pca'][1]:>10,.0f}/s")
    out(f"all detectors:     batched {figures['full'][0]:>12,.0f}/s   one at a time {figures['full'][1]:>10,.0f}/s")
    out(f"pca_batched_samples_per_s={figures['pca'][0]:.0f} pca_single_samples_per_s={figures['pca'][1]:.0f}")
    batched, single = figures["full"]
    out(f"batched_samples_per_s={batched:.0f} single_samples_per_s={single:.0f} ratio={batched / single:.0f}")
    return 0


def register(commands: Commands) -> None:
    train = commands.add("train", "fit and sign an anomaly model version", cmd_train)
    source = train.add_argument_group("source (default: the simulator's normal operation)")
    source.add_argument("--hours", type=float, default=24.0)
    source.add_argument("--seed", type=int, default=1)
    source.add_argument("--frames", type=Path, help="telemetry frames, JSON lines (.gz ok)")
    source.add_argument("--influx", action="store_true", help="from InfluxDB (LINEWATCH_INFLUX__*), --start to --end")
    source.add_argument("--start", type=utc_time, help=TIME_FORMATS)
    source.add_argument("--end", type=utc_time, help=TIME_FORMATS)
    add_csv_arguments(train)
    train.add_argument("--active", action="store_true", help="make it the ACTIVE model")
    train.add_argument("--candidate", action="store_true", help="make it the CANDIDATE (shadow) model")
    evaluate_ = commands.add("evaluate", "detection quality on labelled streams", cmd_evaluate)
    evaluate_.add_argument("--model", help="version (default: ACTIVE)")
    evaluate_.add_argument("--seeds", type=int, default=3)
    evaluate_.add_argument("--hours", type=float, default=8.0)
    evaluate_.add_argument("--per-type", type=int, default=2, help="injections of each fault type per run")
    add_csv_arguments(evaluate_, labels=True)
    commands.group("bench", "benchmarks that print figures")
    bench = commands.add("bench scorer", "batched versus single-sample scoring throughput", cmd_bench)
    bench.add_argument("--equipment-class", default="planetary_mill")
    bench.add_argument("--batch", type=int, default=10_000)
    models = commands.add("models", "list model versions, activate one, or set the candidate", cmd_models)
    models.add_argument(
        "action", nargs="?", default="list", choices=["list", "activate", "candidate", "clear-candidate"]
    )
    models.add_argument("version", nargs="?")
