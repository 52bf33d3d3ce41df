"""`python -m scorer train | evaluate | bench | models` (also `linewatch train`, `linewatch evaluate`, ...)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import sources
from linewatch.console import out
from linewatch.plant import PlantModel, load_plant
from linewatch.simulation.faults import fault_catalogue_schedule
from linewatch.simulation.plant_sim import simulated
from linewatch.timeutil import utc_time
from scorer import evaluate, registry, training
from scorer.settings import ScorerSettings

log = logging.getLogger(__name__)
SIMULATION_EPOCH_DAYS_AGO = 30  # simulated training and evaluation runs lie in the past


def _csv_mapping(args: argparse.Namespace) -> sources.CsvMapping:
    columns = dict(item.split("=", 1) for item in args.map)
    return sources.CsvMapping(args.equipment, args.timestamp_column, columns, getattr(args, "label_column", None))


def _sim_start(hours_back: float = 0.0) -> float:
    return math.floor(time.time() / 7200) * 7200 - SIMULATION_EPOCH_DAYS_AGO * 86400 - hours_back * 3600


def training_frames(args: argparse.Namespace, plant: PlantModel) -> tuple[Any, dict[str, Any]]:
    if args.frames:
        return sources.frames_file(args.frames), {"source": "frames file", "path": str(args.frames)}
    if args.csv:
        frames, _ = sources.csv_rows(args.csv, _csv_mapping(args), plant)
        return frames, {"source": "csv", "path": str(args.csv), "equipment": args.equipment, "map": args.map}
    if args.influx_url:
        return (
            sources.influx(
                args.influx_url,
                args.database,
                utc_time(args.start),
                utc_time(args.end),
                plant,
            ),
            {"source": "influxdb", "url": args.influx_url, "start": args.start, "end": args.end},
        )
    first = _sim_start(args.hours)
    window = {
        "source": "simulator (normal operation)",
        "seed": args.seed,
        "hours": args.hours,
        "start": datetime.fromtimestamp(first, UTC).isoformat(),
    }
    return simulated(plant, first, args.hours, args.seed), window


def cmd_train(args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel) -> int:
    frames, window = training_frames(args, plant)
    started = time.perf_counter()
    models = training.fit(plant, training.collect(plant, frames), seed=args.seed)
    if not models:
        out("no class had enough normal running data to train")
        return 1
    settings.registry.mkdir(parents=True, exist_ok=True)
    version = registry.save(settings.registry, settings.signing_key(), models, window)
    for role in ("ACTIVE", "CANDIDATE"):
        if getattr(args, role.lower()):
            registry.point(settings.registry, role, version)
    out(
        f"trained {len(models)} classes in {time.perf_counter() - started:.0f} s: version {version} "
        f"in {settings.registry}" + (" (active)" if args.active else "") + (" (candidate)" if args.candidate else "")
    )
    return 0


def cmd_models(args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel) -> int:
    if args.action in ("activate", "candidate"):
        role = "ACTIVE" if args.action == "activate" else "CANDIDATE"
        registry.load(settings.registry, args.version, settings.signing_key())  # refuse what would not load
        registry.point(settings.registry, role, args.version)  # type: ignore[arg-type]
    elif args.action == "clear-candidate":
        registry.point(settings.registry, "CANDIDATE", None)
    active, candidate = (registry.pointed(settings.registry, r) for r in ("ACTIVE", "CANDIDATE"))
    for folder in sorted(p for p in settings.registry.glob("*") if (p / "metadata.json").exists()):
        mark = " (active)" if folder.name == active else " (candidate)" if folder.name == candidate else ""
        out(f"{folder.name}{mark}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel) -> int:
    version = args.model or registry.pointed(settings.registry, "ACTIVE")
    if version is None:
        out("no model: train one (`linewatch train --active`) or name one with --model")
        return 1
    models = registry.load(settings.registry, version, settings.signing_key())
    report = evaluate.Report()
    if args.csv:
        csv_frames, rows = sources.csv_rows(args.csv, _csv_mapping(args), plant)
        labels = [evaluate.Label("labelled", args.equipment, a, b) for a, b in _label_windows(rows)]
        hours = (rows[-1][0] - rows[0][0]) / 3600 if rows else 0.0
        report.add_run(plant, evaluate.score_stream(plant, csv_frames, models), labels, hours, lines=1)
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


def cmd_bench(args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scorer", description="anomaly scoring service and tools")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the scorer service (default)")

    def add_csv(p: argparse.ArgumentParser, labels: bool) -> None:
        p.add_argument("--csv", type=Path, help="CSV from another historian")
        p.add_argument("--equipment", help="equipment id in the plant model the CSV belongs to")
        p.add_argument("--timestamp-column", default="timestamp")
        p.add_argument("--map", action="append", default=[], metavar="COLUMN=SENSOR")
        if labels:
            p.add_argument("--label-column", help="non-empty, non-zero = fault")

    train = sub.add_parser("train", help="fit and sign a model version")
    source = train.add_argument_group("source (default: the simulator's normal operation)")
    source.add_argument("--hours", type=float, default=24.0)
    source.add_argument("--seed", type=int, default=1)
    source.add_argument("--frames", type=Path, help="telemetry frames, JSON lines (.gz ok)")
    source.add_argument("--influx-url")
    source.add_argument("--database", default="linewatch")
    source.add_argument("--start")
    source.add_argument("--end")
    add_csv(train, labels=False)
    train.add_argument("--active", action="store_true", help="make it the ACTIVE model")
    train.add_argument("--candidate", action="store_true", help="make it the CANDIDATE (shadow) model")
    evaluate_ = sub.add_parser("evaluate", help="detection quality on labelled streams")
    evaluate_.add_argument("--model", help="version (default: ACTIVE)")
    evaluate_.add_argument("--seeds", type=int, default=3)
    evaluate_.add_argument("--hours", type=float, default=8.0)
    evaluate_.add_argument("--per-type", type=int, default=2, help="injections of each fault type per run")
    add_csv(evaluate_, labels=True)
    bench = sub.add_parser("bench", help="batched versus single-sample scoring throughput")
    bench.add_argument("--equipment-class", default="planetary_mill")
    bench.add_argument("--batch", type=int, default=10_000)
    models = sub.add_parser("models", help="list, activate, or set the candidate")
    models.add_argument(
        "action", nargs="?", default="list", choices=["list", "activate", "candidate", "clear-candidate"]
    )
    models.add_argument("version", nargs="?")
    return parser


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "bench": cmd_bench, "models": cmd_models}


def run_command(args: argparse.Namespace, settings: ScorerSettings) -> int:
    return COMMANDS[args.command](args, settings, load_plant(settings.plant_file))
