"""`linewatch simulate` (and the simulator service): run the reference plant and publish it to Kafka."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from linewatch.core import logs
from linewatch.core.commandline import Commands, UsageError
from linewatch.core.contract import encoder
from linewatch.core.kafka import ensure_topics, kafka_python_security
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.stats import StatsCounter
from linewatch.core.timeutil import TIME_FORMATS, utc_time
from linewatch.services.simulator.settings import SimulatorSettings
from linewatch.simulation.faults import Injection, plan_injection, random_schedule

if TYPE_CHECKING:
    from linewatch.services.simulator.runner import RunPlan

SERVICE = "simulator"
log = logging.getLogger(SERVICE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--duration-s", type=float, default=8 * 3600.0, help="simulated seconds (default 8 h)")
    size.add_argument("--samples", type=int, help="total samples to send (sets the duration)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    pace.add_argument("--max-speed", action="store_true", help="as fast as possible")
    parser.add_argument("--frame-samples", type=int, help="samples per Kafka record (default: by speed)")
    parser.add_argument(
        "--start", type=utc_time, help=f"first sample time (default: the last one is not in the future); {TIME_FORMATS}"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[@EQUIPMENT][+OFFSET_S]",
        help="inject a fault from the plant file's catalogue; repeatable",
    )
    parser.add_argument("--random-faults", type=int, default=0, help="spread N catalogue faults over the run")
    parser.add_argument("--malformed-share", type=float, default=0.0, help="share of messages to spoil")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--labels", type=Path, help="write fault labels (JSON lines) here")
    parser.add_argument("--manifest", type=Path, help="write expected counts and dead letters here")
    parser.add_argument(
        "--serve",
        choices=("kafka", "opcua", "sparkplug"),
        default="kafka",
        help="where the readings go: Kafka frames (default), an OPC UA server on --port, or Sparkplug B to the "
        "MQTT broker on --port (the gateway reads either); lot events go to Kafka",
    )
    parser.add_argument("--port", type=int, default=4840, help="with --serve: the OPC UA port, or the MQTT broker's")


def parse_fault(spec: str, plant: PlantModel) -> tuple[str, str | None, float | None]:
    """NAME[@EQUIPMENT][+OFFSET_S], checked against the plant file's fault catalogue and equipment."""
    name, _, rest = spec.partition("@") if "@" in spec else (spec.split("+")[0], "", "")
    equipment, _, offset = rest.partition("+") if rest else ("", "", spec.partition("+")[2])
    if name not in plant.faults:
        raise UsageError(f"--fault {spec!r}: no fault {name!r}; the plant file has: {', '.join(sorted(plant.faults))}")
    fault = plant.faults[name]
    if equipment:
        unit = plant.equipment_by_id.get(equipment)
        if unit is None or (fault.equipment_class is not None and unit.equipment_class != fault.equipment_class):
            where = f"a {fault.equipment_class}" if fault.equipment_class else "equipment of the plant file"
            raise UsageError(f"--fault {spec!r}: {name} needs {where}, not {equipment!r}")
    try:
        seconds = float(offset) if offset else None
    except ValueError:
        raise UsageError(f"--fault {spec!r}: the offset after '+' is seconds, e.g. {name}+600") from None
    return name, equipment or None, seconds


def named_injections(
    plant: PlantModel, specs: list[str], start_s: float, duration_s: float, rng: np.random.Generator
) -> list[Injection]:
    """The faults asked for by NAME[@EQUIPMENT][+OFFSET_S]; without an offset a quarter into the run."""
    injections = []
    for spec in specs:
        name, equipment, offset = parse_fault(spec, plant)
        start = start_s + (offset if offset is not None else duration_s / 4)
        injections.append(plan_injection(plant, name, equipment, start, rng))
    return injections


def register(commands: Commands) -> None:
    add_arguments(commands.add("simulate", "run the plant simulator and publish it to Kafka", simulate))


def make_plan(args: argparse.Namespace, settings: SimulatorSettings, equipment_count: int, period_s: float) -> RunPlan:
    from linewatch.services.simulator.runner import RunPlan

    seed = args.seed if args.seed is not None else settings.seed
    duration = args.duration_s if args.samples is None else math.ceil(args.samples / equipment_count) * period_s
    speed = None if args.max_speed else args.speed
    frame_samples = args.frame_samples or (100 if speed is None else max(1, min(100, int(speed))))
    if args.start is not None:
        start = args.start.astimezone(UTC).timestamp()
    else:
        # Start in the past so that no sample is in the future when it is sent.
        lead = duration if speed is None else duration * max(0.0, 1.0 - 1.0 / speed)
        start = math.floor(time.time() - lead - frame_samples * period_s)
    return RunPlan(
        start_s=start,
        duration_s=duration,
        frame_samples=frame_samples,
        speed=speed,
        malformed_share=args.malformed_share,
        seed=seed,
    )


def simulate(args: argparse.Namespace) -> int:
    from linewatch.services.simulator.runner import KafkaPublisher, Manifest, Send, run, write_labels

    settings = SimulatorSettings()
    logs.configure(SERVICE, settings.log_level)
    plant = load_plant(settings.plant_file)
    plan = make_plan(args, settings, len(plant.equipment), plant.sample_period_s)
    rng = np.random.default_rng([plan.seed, 3])
    plan.injections += named_injections(plant, args.fault, plan.start_s, plan.duration_s, rng)
    plan.injections += random_schedule(plant, plan.start_s, plan.duration_s, args.random_faults, rng)
    if args.labels:
        write_labels(args.labels, plan)

    ensure_topics(settings.kafka, settings.kafka.topics.all())
    kafka = settings.kafka
    publisher = KafkaPublisher(
        kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots, kafka_python_security(kafka)
    )
    stats = StatsCounter(SERVICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info(
        "simulation started",
        extra={
            "start": datetime.fromtimestamp(plan.start_s, UTC).isoformat(),
            "duration_s": plan.duration_s,
            "speed": plan.speed,
            "faults": [i.fault_name for i in plan.injections],
        },
    )
    last_report = [time.monotonic()]

    def report(manifest: Manifest) -> None:
        if time.monotonic() - last_report[0] >= 1:
            last_report[0] = time.monotonic()
            stats.counters["frames_sent"] = manifest.frames
            stats.counters["samples_sent"] = manifest.samples_sent
            stats.counters["malformed_sent"] = len(manifest.malformed)
            publisher.send(settings.kafka.topics.stats, -1, SERVICE.encode(), stats.snapshot())

    send_frame: Send = publisher.send_frame
    close_sink: Callable[[], None] = lambda: None  # noqa: E731
    if args.serve != "kafka":
        from linewatch.services.simulator.protocols import protocol_sink

        send_frame, close_sink = protocol_sink(args.serve, plant, args.port, stop)
    try:
        manifest = run(plant, plan, send_frame, stop, report, publisher.send_lot)
    finally:
        close_sink()
    last_report[0] = 0.0
    report(manifest)
    publisher.close()
    if args.manifest:
        args.manifest.write_bytes(encoder.encode(manifest))
    log.info(
        "simulation finished",
        extra={"frames": manifest.frames, "samples": manifest.samples_sent, "malformed": len(manifest.malformed)},
    )
    return 0
