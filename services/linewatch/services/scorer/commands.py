"""`linewatch train | evaluate | models | bench scorer`. Handlers import the scientific stack when they run:
the command tree loads on every `linewatch` call and must stay quick."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from linewatch.core.commandline import Commands, UsageError
from linewatch.core.console import out
from linewatch.core.contract import TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.core.timeutil import TIME_FORMATS, utc_time
from linewatch.services.scorer.settings import ScorerSettings
from linewatch.storage import historian
from linewatch.storage.historian import add_csv_arguments

if TYPE_CHECKING:
    from linewatch.services.scorer import registry
    from linewatch.services.scorer.models import ClassModel

SIMULATION_EPOCH_DAYS_AGO = 30  # simulated training and evaluation runs lie in the past


def _sim_start(hours_back: float = 0.0) -> float:
    return math.floor(time.time() / 7200) * 7200 - SIMULATION_EPOCH_DAYS_AGO * 86400 - hours_back * 3600


def _plant(settings: ScorerSettings) -> PlantModel:
    from linewatch.core.plant import read_plant

    return read_plant(settings.plant_file)


def csv_runs(args: argparse.Namespace, plant: PlantModel) -> list[historian.CsvRun]:
    """The CSV runs the arguments name, with a note for each sensor or column that did not map."""
    runs = historian.csv_runs(historian.csv_mapping(args), plant)
    for run in runs:
        for note in run.notes:
            out(f"note: {run.path}: {note}")
        if run.unmapped_sensors:
            out(f"note: {run.path}: no column for sensor(s) {', '.join(run.unmapped_sensors)} of {args.equipment}")
        if run.unused_columns:
            out(f"note: {run.path}: column(s) not used: {', '.join(run.unused_columns)}")
    return runs


def normal_only(frames: Iterable[TelemetryFrame], faulty: set[float]) -> Iterator[TelemetryFrame]:
    """The frames without their labelled-faulty samples (training learns normal operation only)."""
    for frame in frames:
        kept = [s for s in frame.samples if s.ts.timestamp() not in faulty]
        if kept:
            yield msgspec.structs.replace(frame, samples=kept)


def _taken(runs: list[historian.CsvRun], faulty: set[float]) -> Iterator[TelemetryFrame]:
    """Each run's normal frames, the run let go once read: a large export is not held while the model is fit."""
    while runs:
        yield from normal_only(runs.pop(0).frames, faulty)


def training_frames(
    args: argparse.Namespace, settings: ScorerSettings, plant: PlantModel
) -> tuple[Iterable[TelemetryFrame], dict[str, Any]]:
    if args.frames:
        return historian.frames_file(args.frames), {"source": "frames file", "path": str(args.frames)}
    if args.csv:
        runs = csv_runs(args, plant)
        faulty = {ts for run in runs for ts, fault in run.labels if fault}
        source = {"source": "csv", "files": [str(p) for p in args.csv], "equipment": args.equipment}
        return _taken(runs, faulty), source | {"labelled_faulty_rows_left_out": len(faulty)}
    if args.influx:
        if args.start is None or args.end is None:
            raise UsageError("training from InfluxDB needs --start and --end")
        window = {"source": "influxdb", "url": settings.influx.url, "start": args.start.isoformat()}
        return historian.influx(settings.influx, args.start, args.end, plant), window | {"end": args.end.isoformat()}
    return simulated_training(plant, args.hours, args.seed)


def simulated_training(
    plant: PlantModel, hours: float, seed: int, lots: int = 1
) -> tuple[Iterator[TelemetryFrame], dict[str, Any]]:
    """The simulator's normal operation, in the past: the default training data. `hours` before a lot change,
    and as long at the same point of each of the `lots - 1` lots after it (the simulator's recipes change from
    lot to lot; a recipe left out of training is not scored)."""
    from linewatch.simulation.plant_sim import simulated

    first = _sim_start(hours)
    source: dict[str, Any] = {
        "source": "simulator (normal operation)",
        "seed": seed,
        "hours": hours,
        "start": datetime.fromtimestamp(first, UTC).isoformat(),
    }
    if lots > 1:
        source["lots"] = lots
    windows = (simulated(plant, first + n * plant.lot_duration_s, hours, seed) for n in range(lots))
    return itertools.chain.from_iterable(windows), source


def describe(model: ClassModel) -> str:
    c = model.calibration
    text = (
        f"{model.key}: {c['rows']} normal samples in {c['runs']} run(s) every {c['period_s']:g} s; "
        f"{c['features']} features{' (with the previous sample)' if c['lags'] else ''}, {c['components']} "
        f"components; false alarms on held-out normal data {c['held_out_false_alarm_pct']:.2f} % "
        f"(target {c['target_false_alarm_pct']:.2f} %, at most {c['target_false_alerts_per_week']:g} false alerts a "
        f"week: the {c['bound_by']} binds)"
    )
    if c["extrapolation_factor"] > 1:
        text += (
            f"; the data ({c['effective_rows']:.0f} independent samples after autocorrelation) show rates down to "
            f"{100 / c['effective_rows']:.2f} %: the target lies {c['extrapolation_factor']:.1f}x beyond them "
            "and rests on the fitted tail"
        )
    if "spe_smooth" in model.left_out:
        text += (
            "; the smoothed SPE is left out: too few independent samples to calibrate it (slow drifts are watched "
            "sensor by sensor)"
        )
    return text


def cmd_train(args: argparse.Namespace) -> int:
    from linewatch.services.scorer import training
    from linewatch.services.scorer.models import Targets

    settings = ScorerSettings()
    plant = _plant(settings)
    frames, window = training_frames(args, settings, plant)
    targets = Targets(
        (args.false_alarm_pct if args.false_alarm_pct is not None else settings.false_alarm_pct) / 100,
        settings.false_alerts_per_week,
    )
    started = time.perf_counter()
    roles: list[registry.Role] = []
    if args.active:
        roles.append("ACTIVE")
    if args.candidate:
        roles.append("CANDIDATE")
    try:
        version, models, refused = training.train_version(
            plant,
            frames,
            window | {"targets": dataclasses.asdict(targets), "contexts": args.contexts},
            settings.registry,
            settings.signing_key(),
            roles,
            targets=targets,
            contexts=args.contexts,
            seed=args.seed,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for model in models.values():
        out(describe(model))
    for reason in refused:
        out(f"not trained: {reason}")
    out(
        f"trained {len(models)} model(s) in {time.perf_counter() - started:.0f} s: version {version} "
        f"in {settings.registry}" + (" (active)" if args.active else "") + (" (candidate)" if args.candidate else "")
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from linewatch.services.scorer import registry

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
    from linewatch.services.scorer import evaluate, registry
    from linewatch.simulation.faults import fault_catalogue_schedule
    from linewatch.simulation.plant_sim import simulated

    settings = ScorerSettings()
    plant = _plant(settings)
    version = args.model or registry.pointed(settings.registry, "ACTIVE")
    if version is None:
        raise UsageError("no model: train one (`linewatch train --active`) or name one with --model")
    try:
        models = registry.load(settings.registry, version, settings.signing_key())
    except registry.ModelVerificationError as exc:
        raise UsageError(str(exc)) from None
    report = evaluate.Report()
    if args.csv:
        if not args.label_column:
            raise UsageError("evaluate --csv needs --label-column: which column says a row is faulty")
        for run in csv_runs(args, plant):
            trace = evaluate.score_stream(plant, run.frames, models).get(args.equipment, evaluate.Trace())
            alone = evaluate.Report()
            for each in (alone, report):
                each.add_labelled(trace, dict(run.labels))
            out(f"{run.path}: {alone.total.line()}")
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
            f"model {version}; alerts {report.alerts_total}, not explained by a fault {report.false_alerts} in "
            f"{report.normal_line_hours:.0f} line-hours"
        )
        out(" ".join(f"{k}={v:.3g}" for k, v in summary.items()))
    out(report.total.line())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Scoring throughput of one class model on one core: batched versus one sample per call."""
    import numpy as np

    from linewatch.services.scorer import training
    from linewatch.services.scorer.features import StreamState, stream_block
    from linewatch.simulation.plant_sim import simulated

    settings = ScorerSettings()
    plant = _plant(settings)
    name = args.equipment_class
    frames = (f for f in simulated(plant, _sim_start(3), 3, 1) if f.equipment_class == name)
    models, _ = training.fit(plant, {name: training.collect(plant, frames)[name]})
    model = models[name]
    [stream] = training.collect(
        plant, (f for f in simulated(plant, _sim_start(8), 2, 2) if f.equipment_id == plant_unit(plant, name))
    )[name][:1]
    block = stream_block(StreamState(), model.layout, stream.values, stream.provided, stream.ts, model.period_s)
    batch = block.take(np.arange(min(args.batch, len(block.features))))

    def rate(call: Any, rows: int, per_call: int, seconds: float = 2.0) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for i in range(0, rows, per_call):
                call(batch.take(np.arange(i, min(i + per_call, rows))))
                done += min(per_call, rows - i)
        return done / (time.perf_counter() - started)

    def pca(part: Any) -> Any:
        z = (part.features - model.mean) / model.scale
        return z @ model.components.T

    rows = len(batch.features)
    figures = {
        "pca": (rate(pca, rows, rows), rate(pca, min(rows, 2000), 1)),
        "full": (rate(model.detect, rows, rows), rate(model.detect, min(rows, 500), 1)),
    }
    out(
        f"class {name}: {len(model.layout.names)} features, {len(model.eigenvalues)} PCA components, "
        f"IsolationForest 100 trees; batches of {rows:,} rows, one core"
    )
    out(f"PCA T2+SPE:        batched {figures['pca'][0]:>12,.0f}/s   one at a time {figures['pca'][1]:>10,.0f}/s")
    out(f"all detectors:     batched {figures['full'][0]:>12,.0f}/s   one at a time {figures['full'][1]:>10,.0f}/s")
    out(f"pca_batched_samples_per_s={figures['pca'][0]:.0f} pca_single_samples_per_s={figures['pca'][1]:.0f}")
    batched, single = figures["full"]
    out(f"batched_samples_per_s={batched:.0f} single_samples_per_s={single:.0f} ratio={batched / single:.0f}")
    return 0


def plant_unit(plant: PlantModel, equipment_class: str) -> str:
    return next(e.id for e in plant.equipment if e.equipment_class == equipment_class)


def register(commands: Commands) -> None:
    train = commands.add("train", "fit, calibrate and sign an anomaly model version", cmd_train)
    source = train.add_argument_group("source (default: the simulator's normal operation)")
    source.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    source.add_argument("--seed", type=int, default=1)
    source.add_argument("--frames", type=Path, help="telemetry frames, JSON lines (.gz ok)")
    source.add_argument("--influx", action="store_true", help="from InfluxDB (LINEWATCH_INFLUX__*), --start to --end")
    source.add_argument("--start", type=utc_time, help=TIME_FORMATS)
    source.add_argument("--end", type=utc_time, help=TIME_FORMATS)
    add_csv_arguments(train, labels=True)
    train.add_argument(
        "--false-alarm-pct",
        type=float,
        help="share of normal samples allowed to alarm, after the debounce (default: LINEWATCH_FALSE_ALARM_PCT, 0.5)",
    )
    train.add_argument(
        "--contexts",
        choices=["auto", "pooled"],
        default="auto",
        help="auto: also a model per run context (recipe; CSV file) with enough data; pooled: one per class",
    )
    train.add_argument("--active", action="store_true", help="make it the ACTIVE model")
    train.add_argument("--candidate", action="store_true", help="make it the CANDIDATE (shadow) model")
    evaluate_ = commands.add("evaluate", "detection quality on labelled streams", cmd_evaluate)
    evaluate_.add_argument("--model", help="version (default: ACTIVE)")
    evaluate_.add_argument("--seeds", type=int, default=3, help="simulated runs (without --csv)")
    evaluate_.add_argument("--hours", type=float, default=8.0, help="hours per simulated run")
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
