"""`linewatch up | service | drill | bench … | grafana build`; handlers load what they need when run."""

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
    status: int | None = importlib.import_module(f"linewatch.services.{args.name}.__main__").main()
    return status or 0


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

    return bench_pipeline(samples=args.samples, frame_samples=args.frame_samples, full=args.full)


def _bench_stages(args: argparse.Namespace) -> int:
    from linewatch.tools.stagebench import MIN_STAGE_RECORDS, STAGES, bench_stages

    unknown = sorted(set(args.stage or ()) - set(STAGES))
    if unknown:
        raise UsageError(f"--stage {unknown[0]}: no such stage; the stages are {', '.join(STAGES)}")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: give 1 or more turns")
    if args.records < MIN_STAGE_RECORDS:
        raise UsageError(
            f"--records {args.records}: give {MIN_STAGE_RECORDS:,} or more (a faust service's CPU is read at its "
            "stats reports, every 0.1 s: a shorter run is mostly its first and last report)"
        )
    return bench_stages(args.records, tuple(args.frame_samples or (1, 100)), tuple(args.stage or STAGES), args.repeat)


def _bench_broker(args: argparse.Namespace) -> int:
    from linewatch.tools.brokerbench import bench_broker

    wait_ms = args.fetch_max_wait_ms
    if args.partitions < 1 or args.seconds <= 0 or min(args.held or (0,)) < 0 or (wait_ms is not None and wait_ms < 1):
        raise UsageError(
            "give --partitions of 1 or more, --seconds above 0, --held of 0 or more, --fetch-max-wait-ms of 1 or more"
        )
    held = tuple(sorted(set(args.held or (0, 4_000, 8_000, 16_000))))
    return bench_broker(args.partitions, held, args.seconds, wait_ms)


def _bench_latency(args: argparse.Namespace) -> int:
    from linewatch.tools.latencybench import bench_latency

    shape = (args.rate_hz, args.frame_samples, args.prefill, args.copies)
    if args.load is not None and args.load <= 0:
        raise UsageError(f"--load {args.load:g}: give a load above 0 samples/s, or leave it out for --load-share")
    if args.partitions < 1:
        raise UsageError(f"--partitions {args.partitions}: give 1 or more")
    if args.influx_dir is not None and not args.influx_dir.is_dir():
        raise UsageError(f"--influx-dir {args.influx_dir}: no such directory; give one that exists")
    return bench_latency(
        args.load_share,
        args.seconds,
        *shape,
        aligned=args.aligned,
        load_samples_per_s=args.load,
        capacity_from=args.capacity,
        partitions=args.partitions,
        influx_parent=args.influx_dir,
    )


def _bench_detection(args: argparse.Namespace) -> int:
    from linewatch.tools.detectionbench import bench_detection

    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: give 1 or more draws of each process")
    return bench_detection(args.seeds)


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


def _plant_validate(args: argparse.Namespace) -> int:
    from linewatch.core.console import out
    from linewatch.core.plant import Protocol, load_plant
    from linewatch.core.yamlfile import FileProblems

    try:
        plant = load_plant(args.file)
    except FileNotFoundError:
        raise UsageError(f"no plant file {args.file}") from None
    except FileProblems as exc:
        for problem in exc.problems:
            out(problem)
        out(f"{args.file}: {len(exc.problems)} problem(s); schema: schemas/plant.v1.schema.json")
        return 1
    protocols: tuple[Protocol, ...] = ("opcua", "sparkplug", "mqtt")
    addressed = {
        p: sum(
            plant.address(e, s, p) is not None
            for e in plant.equipment
            for s in plant.classes[e.equipment_class].sensors
        )
        for p in protocols
    }
    sources = ", ".join(f"{n} with a {p} address" for p, n in addressed.items() if n) or "no source addresses"
    out(
        f"{args.file}: valid: {len(plant.equipment)} units of {len(plant.classes)} classes, "
        f"{plant.sensor_count()} sensors ({sources})"
    )
    return 0


def _plant_discover(args: argparse.Namespace) -> int:
    from linewatch.core.console import out
    from linewatch.tools.discover import discover

    document, notes = discover(args.endpoint, args.root, args.output)
    for note in notes[:20]:
        out(f"note: {note}")
    if len(notes) > 20:
        out(f"note: and {len(notes) - 20} more")
    units = sum(len(g["ids"]) for a in document["areas"] for line in a["lines"] for g in line["equipment"])
    sensors = sum(len(c["sensors"]) for c in document["classes"].values())
    out(
        f"wrote {args.output}: {units} units of {len(document['classes'])} classes ({sensors} sensor kinds); "
        f"check it with `linewatch plant validate {args.output}`"
    )
    return 0


def _bench_gateway(args: argparse.Namespace) -> int:
    from linewatch.tools.gatewaybench import bench_gateway

    return bench_gateway(messages=int(args.messages), metrics=int(args.metrics))


def register(commands: Commands) -> None:
    up = commands.add("up", "embedded broker + InfluxDB, all services and the simulator, live view", _up)
    up.add_argument("--speed", type=float, default=10.0, help="simulated seconds per wall second")
    up.add_argument("--duration-s", type=float, default=8 * 3600.0, help="simulated run length")
    up.add_argument("--random-faults", type=int, default=16)
    up.add_argument("--malformed-share", type=float, default=0.002)
    up.add_argument("--for-s", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    up.add_argument("--train-hours", type=float, default=6.0, help="simulated normal hours to train on first")
    up.add_argument(
        "--source",
        choices=("kafka", "opcua", "sparkplug"),
        default="kafka",
        help="how readings reach linewatch: simulator frames on Kafka, or the plant served over OPC UA or "
        "Sparkplug B (mosquitto) and read by the gateway",
    )
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
    bench.add_argument("--full", action="store_true", help="with the scorer (a trained model) and the alerter")
    stages = commands.add(
        "bench stages",
        "each faust stage's CPU a record beside a bare aiokafka loop, 1 and 100 samples a frame",
        _bench_stages,
    )
    stages.add_argument("--records", type=int, default=10_000, help="Kafka records per stage and frame size")
    stages.add_argument(
        "--stage", action="append", help="only this stage, a faust service of the pipeline (repeatable)"
    )
    stages.add_argument("--frame-samples", type=int, action="append", help="only this frame size (repeatable)")
    stages.add_argument(
        "--repeat", type=int, default=1, help="turns of each stage, each in groups of its own; the median decides"
    )
    latency = commands.add(
        "bench latency", "sample to score in InfluxDB and to alarm event on Kafka, at half capacity", _bench_latency
    )
    latency.add_argument("--load-share", type=float, default=0.5, help="share of the measured capacity to load")
    latency.add_argument(
        "--capacity",
        choices=("live", "backlog"),
        default="live",
        help="the capacity the share is of: the highest live load kept up with, or the rate through a backlog",
    )
    latency.add_argument(
        "--load", type=float, help="samples/s of live load, whatever the capacity (comparing settings): not a share"
    )
    latency.add_argument("--seconds", type=float, default=60.0, help="seconds of live load")
    latency.add_argument("--rate-hz", type=float, default=10.0, help="each unit's sample rate")
    latency.add_argument("--frame-samples", type=int, default=10, help="samples per Kafka record")
    latency.add_argument("--copies", type=int, default=48, help="the reference plant's units this many times over")
    latency.add_argument(
        "--aligned", action="store_true", help="every unit's frame at one instant (default: spread over the period)"
    )
    latency.add_argument("--prefill", type=int, default=300_000, help="samples for the capacity measurement")
    latency.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partitions of every topic: one worker a service reads one (more cost the dev broker a listing a fetch)",
    )
    latency.add_argument(
        "--influx-dir",
        type=Path,
        help="where influxd keeps its data and WAL (default: /dev/shm, memory, where it has 2 GB free; else temp)",
    )
    broker = commands.add(
        "bench broker", "the dev broker's CPU at one light load as its partitions fill with batches", _bench_broker
    )
    broker.add_argument("--partitions", type=int, default=1, help="partitions of the topic")
    broker.add_argument("--held", type=int, action="append", help="batches held before a step (repeatable)")
    broker.add_argument("--seconds", type=float, default=10.0, help="seconds of load a step")
    broker.add_argument("--fetch-max-wait-ms", type=int, help="the consumer's fetch wait (default: the services')")
    detection = commands.add(
        "bench detection", "linewatch against a textbook PCA monitor on synthetic processes", _bench_detection
    )
    detection.add_argument("--seeds", type=int, default=1, help="draws of each process's data (the mean is reported)")
    gateway = commands.add(
        "bench gateway", "Sparkplug B over MQTT into Kafka against the raw MQTT receive rate", _bench_gateway
    )
    gateway.add_argument("--messages", type=int, default=50_000, help="DDATA messages to publish")
    gateway.add_argument("--metrics", type=int, default=10, help="metrics per DDATA message")
    commands.group("plant", "plant files: check one, draft one from a CSV export or an OPC UA server")
    check = commands.add("plant validate", "check a plant file; each mistake with its line and field", _plant_validate)
    check.add_argument("file", type=Path)
    found = commands.add("plant discover", "browse an OPC UA server and write a draft plant file", _plant_discover)
    found.add_argument("endpoint", help="opc.tcp://HOST:PORT")
    found.add_argument("--root", help="browse path under Objects to start from, e.g. /2:Plant")
    found.add_argument("-o", "--output", type=Path, default=Path("discovered-plant.yaml"))
    draft = commands.add("plant draft", "write a plant file for equipment known only from a CSV export", _plant_draft)
    add_csv_arguments(draft, labels=True)
    draft.add_argument("-o", "--output", type=Path, required=True, help="the plant file to write (YAML)")
    commands.group("grafana", "Grafana dashboards as code")
    commands.add("grafana build", "write deploy/grafana/dashboards from linewatch.tools.grafana", _grafana_build)
