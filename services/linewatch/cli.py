"""`linewatch`: one command for the plant pipeline (up, simulate, service, bench)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from linewatch import logs
from linewatch.launcher import SERVICES
from linewatch.replaycmds import add_parsers as add_replay_parsers

log = logging.getLogger("linewatch")


def _exec_module(module: str, args: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module, *args])  # noqa: S606 (fixed argv, no shell)


def cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console, Group
    from rich.live import Live

    from linewatch.devstack import DevStack
    from linewatch.drill import pipeline_env, train
    from linewatch.kafka import ensure_topics
    from linewatch.launcher import ServiceProcess
    from linewatch.liveview import AlarmFeed, PipelineView, StatsReader
    from linewatch.settings import KafkaSettings

    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-up-"))
    console = Console()
    with DevStack() as stack:
        env = pipeline_env(stack, run_dir)
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all())
        console.print(f"training anomaly models on {args.train_hours:g} h of simulated normal operation ...")
        train(env, args.train_hours, run_dir / "train.log")
        simulator_args = [
            "--speed",
            str(args.speed),
            "--duration-s",
            str(args.duration_s),
            "--random-faults",
            str(args.random_faults),
            "--malformed-share",
            str(args.malformed_share),
            "--labels",
            str(run_dir / "fault-labels.jsonl"),
        ]
        processes = [ServiceProcess(name, env, run_dir / f"{name}.log").start() for name in SERVICES]
        processes.append(ServiceProcess("simulator", env, run_dir / "simulator.log", tuple(simulator_args)).start())
        reader = StatsReader(kafka)
        alarms = AlarmFeed(kafka)
        view = PipelineView()
        title = (
            f"linewatch — broker {stack.broker.bootstrap}, InfluxDB {stack.influxd.url} "
            f"(db {stack.database}); logs in {run_dir}; Ctrl-C stops"
        )
        # The operator's token is this run's throw-away one; printed so `linewatch alarms` works alongside.
        console.print(
            "alarm API: export LINEWATCH_API_PORT={} LINEWATCH_OPERATOR_TOKEN={}; linewatch alarms list".format(
                env["LINEWATCH_API_PORT"], env["LINEWATCH_OPERATOR_TOKEN"]
            )
        )
        deadline = time.monotonic() + args.for_s if args.for_s else None
        try:
            with Live(view.render(title), console=console, refresh_per_second=2) as live:
                while deadline is None or time.monotonic() < deadline:
                    reader.poll(view.add, 0.3)
                    alarms.poll(0.2)
                    live.update(Group(view.render(title), alarms.render()))
                    dead = [p.name for p in processes if not p.alive() and p.name != "simulator"]
                    if dead:
                        console.print(f"[red]service(s) stopped unexpectedly: {dead}; see {run_dir}")
                        return 1
        except KeyboardInterrupt:
            pass
        finally:
            reader.close()
            alarms.close()
            for process in reversed(processes):
                process.stop()
    console.print(f"stopped; logs kept in {run_dir}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from linewatch.bench import bench_pipeline

    if args.target == "pipeline":
        return bench_pipeline(samples=args.samples, frame_samples=args.frame_samples)
    if args.target == "replay":
        from linewatch.replaycmds import bench_replay

        return bench_replay(samples=args.samples, frame_samples=args.frame_samples)
    raise SystemExit(f"unknown benchmark {args.target}")


def cmd_drill(args: argparse.Namespace) -> int:
    from linewatch.drill import drill

    return drill(args.hours, args.fault, args.train_hours, args.seed)


def cmd_grafana(args: argparse.Namespace) -> int:
    from linewatch.grafana import build

    for path in build():
        sys.stdout.write(f"written {path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="embedded broker + InfluxDB, all services and the simulator, live view")
    up.add_argument("--speed", type=float, default=10.0, help="simulated seconds per wall second")
    up.add_argument("--duration-s", type=float, default=8 * 3600.0, help="simulated run length")
    up.add_argument("--random-faults", type=int, default=16)
    up.add_argument("--malformed-share", type=float, default=0.002)
    up.add_argument("--for-s", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    up.add_argument("--train-hours", type=float, default=6.0, help="simulated normal hours to train on first")
    up.set_defaults(func=cmd_up)
    simulate = sub.add_parser("simulate", help="run the plant simulator (see `linewatch simulate -h`)", add_help=False)
    simulate.set_defaults(func=None, module="simulator")
    for name, text in (
        ("train", "fit and sign an anomaly model version"),
        ("evaluate", "detection quality"),
        ("models", "list or roll out model versions"),
        ("alarms", "alarm list, acknowledge/shelve/disable, KPIs"),
        ("lots", "lot genealogy: cells affected by a lot or an alarm"),
    ):
        sub.add_parser(name, help=f"{text} (see `linewatch {name} -h`)", add_help=False)
    drill = sub.add_parser("drill", help="a simulated shift through the whole pipeline, then the alarm KPIs")
    drill.add_argument("--hours", type=float, default=8.0)
    drill.add_argument("--fault", action="append", default=[], help="NAME[@EQUIPMENT][+OFFSET_S], repeatable")
    drill.add_argument("--train-hours", type=float, default=6.0)
    drill.add_argument("--seed", type=int, default=11)
    drill.set_defaults(func=cmd_drill)
    add_replay_parsers(sub)
    grafana = sub.add_parser("grafana", help="write the Grafana dashboards (deploy/grafana/dashboards)")
    grafana.add_argument("action", choices=["build"])
    grafana.set_defaults(func=cmd_grafana)
    service = sub.add_parser("service", help="run one service in the foreground")
    service.add_argument("name", choices=SERVICES)
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench.add_argument("target", choices=["pipeline", "scorer", "replay"])
    bench.add_argument("--samples", type=int, default=600_000)
    bench.add_argument("--frame-samples", type=int, default=100, help="samples per Kafka record")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        _exec_module("simulator", argv[1:])
    if argv[:1] in (["train"], ["evaluate"], ["models"]):
        _exec_module("scorer", argv)
    if argv[:1] in (["alarms"], ["lots"]):
        _exec_module("alerter", argv)
    if argv[:2] == ["bench", "scorer"]:
        _exec_module("scorer", ["bench", *argv[2:]])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "service":
        _exec_module(args.name, [])
    logs.configure("linewatch", os.environ.get("LINEWATCH_LOG_LEVEL", "WARNING"))
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
