"""`linewatch up | service | drill | bench pipeline | grafana build`; handlers load what they need when run."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from linewatch.core.commandline import Commands, UsageError
from linewatch.core.services import SERVICES
from linewatch.storage.historian import add_csv_arguments


def _up(args: argparse.Namespace) -> int:
    from linewatch.tools.up import up

    return up(args)


def _service(args: argparse.Namespace) -> int:
    """Run one service in the foreground, in this process, as compose and k8s do."""
    importlib.import_module(f"linewatch.services.{args.name}.__main__").main()
    return 0


def _drill(args: argparse.Namespace) -> int:
    if args.days is not None:
        if args.hours is not None:
            raise UsageError("drill takes --hours (through the services) or --days (in process), not both")
        from linewatch.tools.alarmdrill import long_drill

        return long_drill(args.days, args.fault, args.every_fault, args.train_hours or 24.0, args.seed)
    if args.every_fault:
        raise UsageError("--every-fault goes with --days; with --hours name the faults with --fault")
    from linewatch.tools.drill import drill

    return drill(args.hours or 8.0, args.fault, args.train_hours or 6.0, args.seed)


def _bench_pipeline(args: argparse.Namespace) -> int:
    from linewatch.tools.bench import bench_pipeline

    return bench_pipeline(samples=args.samples, frame_samples=args.frame_samples)


def _bench_detection(args: argparse.Namespace) -> int:
    from linewatch.tools.detectionbench import bench_detection

    return bench_detection()


def _grafana_build(args: argparse.Namespace) -> int:
    from linewatch.core.console import out
    from linewatch.tools.grafana import build

    for path in build():
        out(f"written {path}")
    return 0


def _plant_draft(args: argparse.Namespace) -> int:
    from linewatch.core.console import out
    from linewatch.tools import plantfile

    if not args.equipment:
        raise UsageError("give the equipment an id: --equipment ID (it becomes the unit's id in the plant file)")
    tables = plantfile.read_tables(args.csv)
    document, notes = plantfile.draft(
        tables, args.equipment, args.timestamp_column, args.decimal_comma, args.label_column
    )
    plantfile.write(document, args.output)
    for note in notes:
        out(f"note: {note}")
    [equipment_class] = document["classes"]
    sensors = document["classes"][equipment_class]["sensors"]
    out(
        f"wrote {args.output}: equipment {args.equipment} of class {equipment_class}, {len(sensors)} sensors, "
        f"one sample every {document['sample_period_s']:g} s; use it with LINEWATCH_PLANT_FILE={args.output}"
    )
    return 0


def register(commands: Commands) -> None:
    up = commands.add("up", "embedded broker + InfluxDB, all services and the simulator, live view", _up)
    up.add_argument("--speed", type=float, default=10.0, help="simulated seconds per wall second")
    up.add_argument("--duration-s", type=float, default=8 * 3600.0, help="simulated run length")
    up.add_argument("--random-faults", type=int, default=16)
    up.add_argument("--malformed-share", type=float, default=0.002)
    up.add_argument("--for-s", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    up.add_argument("--train-hours", type=float, default=6.0, help="simulated normal hours to train on first")
    service = commands.add("service", "run one service in the foreground", _service)
    service.add_argument("name", choices=[s.name for s in SERVICES])
    drill = commands.add("drill", "a simulated stretch of plant operation, then the alarm KPIs", _drill)
    drill.add_argument("--hours", type=float, help="hours through the whole pipeline (default 8)")
    drill.add_argument("--days", type=float, help="days through the scorer's and alerter's engines in process")
    drill.add_argument("--fault", action="append", default=[], help="NAME[@EQUIPMENT][+OFFSET_S], repeatable")
    drill.add_argument("--every-fault", action="store_true", help="with --days: each fault type once, spread out")
    drill.add_argument("--train-hours", type=float, help="normal hours to train on (default 6, with --days 24)")
    drill.add_argument("--seed", type=int, default=11)
    commands.group("bench", "benchmarks that print figures")
    bench = commands.add("bench pipeline", "validator and writer against the InfluxDB ceiling", _bench_pipeline)
    bench.add_argument("--samples", type=int, default=600_000)
    bench.add_argument("--frame-samples", type=int, default=100, help="samples per Kafka record")
    commands.add("bench detection", "linewatch against a textbook PCA monitor on synthetic processes", _bench_detection)
    commands.group("plant", "plant files: draft one from a CSV export")
    draft = commands.add("plant draft", "write a plant file for equipment known only from a CSV export", _plant_draft)
    add_csv_arguments(draft, labels=True)
    draft.add_argument("-o", "--output", type=Path, required=True, help="the plant file to write (YAML)")
    commands.group("grafana", "Grafana dashboards as code")
    commands.add("grafana build", "write deploy/grafana/dashboards from linewatch.tools.grafana", _grafana_build)
