"""`linewatch record | replay | whatif | import`, and `linewatch bench replay`."""

from __future__ import annotations

import argparse
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from linewatch.core.commandline import Commands, UsageError
from linewatch.core.console import out
from linewatch.core.settings import REPO_ROOT, CommonSettings, InfluxSettings
from linewatch.core.timeutil import TIME_FORMATS, utc_time
from linewatch.storage import historian
from linewatch.storage.historian import add_csv_arguments

if TYPE_CHECKING:  # rich loads only for the commands that draw progress
    from rich.progress import Progress


class ToolSettings(CommonSettings):
    influx: InfluxSettings = InfluxSettings()
    registry: Path = REPO_ROOT / "models"
    # What-if runs verify the model versions they compare, as the scorer does.
    model_signing_key: SecretStr | None = None


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
    )


def cmd_record(args: argparse.Namespace) -> int:
    from linewatch.tools.recording.recorder import RecordingWriter, RecordPlan, record

    settings = ToolSettings()
    topics = args.topic or [settings.kafka.topics.raw, settings.kafka.topics.lots]
    plan = RecordPlan(topics, args.from_start, args.since, args.until, args.for_s, args.idle_s)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    progress = _progress()
    with RecordingWriter(args.output, settings.kafka.bootstrap_servers, topics, args.note) as writer, progress:
        task = progress.add_task(f"recording {', '.join(topics)}", total=None)
        count = record(settings.kafka, plan, writer, stop.is_set, lambda n: progress.update(task, completed=n))
    out(f"recorded {count} messages from {', '.join(topics)} into {args.output}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from linewatch.core.kafka import RecordProducer, ensure_topics, kafka_python_security
    from linewatch.tools.recording.recorder import (
        ReplayPlan,
        in_time_order,
        read_messages,
        replay,
        sandbox_env,
        sandbox_prefix,
        sandbox_topics,
    )

    settings = ToolSettings()
    replay_id = args.replay_id or f"replay-{uuid.uuid4().hex[:8]}"
    messages = in_time_order(read_messages(args.recording))
    ensure_topics(settings.kafka, sandbox_topics(replay_id).all())
    producer = RecordProducer(settings.kafka.bootstrap_servers, kafka_python_security(settings.kafka))
    plan = ReplayPlan(None if args.max_speed else args.speed, replay_id, lambda t: sandbox_prefix(replay_id) + t)
    progress = _progress()
    with progress:
        task = progress.add_task(f"replay {replay_id}", total=len(messages))
        sent = replay(messages, plan, producer.send, lambda n: progress.update(task, completed=n))
    producer.close()
    out(f"replayed {sent} messages into sandbox topics {sandbox_prefix(replay_id)}*")
    settings_text = " ".join(f"{k}={v}" for k, v in sandbox_env(replay_id, messages).items())
    out(f"services read the sandbox with: {settings_text}")
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from linewatch.core.plant import load_plant
    from linewatch.tools.recording.whatif import whatif

    settings = ToolSettings()
    if settings.model_signing_key is None:
        raise UsageError("LINEWATCH_MODEL_SIGNING_KEY is not set: the model versions cannot be verified")
    versions = [args.model, *([args.compare] if args.compare else [])]
    speed = None if args.max_speed else args.speed
    whatif(
        args.recording,
        versions,
        settings.kafka,
        settings.influx,
        settings.registry,
        args.rules,
        speed,
        args.labels,
        out,
        load_plant(settings.plant_file),
        settings.model_signing_key.get_secret_value().encode(),
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from linewatch.core.contract import encoder
    from linewatch.core.plant import load_plant
    from linewatch.tools.recording.recorder import RecordedMessage, RecordingWriter

    settings = ToolSettings()
    plant = load_plant(settings.plant_file)
    if args.source == "csv":
        runs = historian.csv_runs(historian.csv_mapping(args), plant)
        for run in runs:
            for note in run.notes:
                out(f"note: {run.path}: {note}")
        frames = [frame for run in runs for frame in run.frames]
        origin = ", ".join(str(path) for path in args.csv)
    else:
        if args.start is None or args.end is None:
            raise UsageError("import influx needs --start and --end")
        frames = list(historian.influx(settings.influx, args.start, args.end, plant))
        window = f"{args.start.isoformat()}..{args.end.isoformat()}"
        origin = f"{settings.influx.url} database {settings.influx.database} {window}"
    frames.sort(key=lambda f: f.samples[0].ts)
    topic = settings.kafka.topics.raw
    with RecordingWriter(args.output, origin, [topic], f"imported from {args.source}") as writer:
        for index, frame in enumerate(frames):
            stamp = int(frame.samples[0].ts.timestamp() * 1000)
            # No Kafka position yet: partition -1 lets the replay partition by key like any producer.
            writer.write(RecordedMessage(topic, -1, index, stamp, frame.equipment_id.encode(), encoder.encode(frame)))
    out(f"imported {len(frames)} frames ({sum(len(f.samples) for f in frames)} samples) into {args.output}")
    return 0


def cmd_bench_replay(args: argparse.Namespace) -> int:
    """Maximum-speed replay against the raw producer ceiling on the embedded broker: the simulator loads the raw
    topic, `record` takes it into a recording, and both runs send the recording's messages."""
    import tempfile

    from linewatch.core.contract import telemetry_decoder
    from linewatch.core.kafka import RecordProducer, ensure_topics
    from linewatch.core.settings import KafkaSettings
    from linewatch.tools.bench import simulate_into
    from linewatch.tools.devstack import DevStack
    from linewatch.tools.recording.recorder import (
        RecordingWriter,
        RecordPlan,
        ReplayPlan,
        in_time_order,
        read_messages,
        record,
        replay,
        sandbox_prefix,
        sandbox_topics,
    )

    samples, frame_samples = args.samples, args.frame_samples
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-bench-replay-"))
    path = run_dir / "bench.lwrec.gz"
    with DevStack() as stack:
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all() + sandbox_topics("bench").all() + sandbox_topics("ceiling").all())
        simulate_into(stack.service_env(), samples, frame_samples, run_dir / "simulator.log")
        with RecordingWriter(path, kafka.bootstrap_servers, [kafka.topics.raw]) as writer:
            record(kafka, RecordPlan([kafka.topics.raw], from_start=True, idle_s=2.0), writer)
        began = time.perf_counter()
        messages = in_time_order(read_messages(path))
        load_s = time.perf_counter() - began
        count = sum(len(telemetry_decoder.decode(m.value or b"").samples) for m in messages)
        ceiling_topic = sandbox_prefix("ceiling") + kafka.topics.raw

        def ceiling_run() -> float:
            producer = RecordProducer(stack.broker.bootstrap)
            began = time.perf_counter()
            for m in messages:
                producer.send(ceiling_topic, m.partition, m.key, m.value, m.headers)
            producer.close()
            return count / (time.perf_counter() - began)

        # Ceiling before and after the replay: the broker's memory grows as topics fill; take the mean.
        first = ceiling_run()
        producer = RecordProducer(stack.broker.bootstrap)
        began = time.perf_counter()
        replay(messages, ReplayPlan(None, "bench", lambda t: sandbox_prefix("bench") + t), producer.send)
        producer.close()
        replayed = count / (time.perf_counter() - began)
        ceiling = (first + ceiling_run()) / 2
    out(f"loading the recording: {load_s:.1f} s ({count / load_s:,.0f} samples/s), before publishing starts")
    size_mb = path.stat().st_size / 1e6
    out(f"recording: {len(messages)} messages, {count} samples ({frame_samples} a message), {size_mb:.1f} MB")
    ratio = replayed / ceiling
    out(f"replay_samples_per_s={replayed:.0f} producer_ceiling_samples_per_s={ceiling:.0f} ratio={ratio:.2f}")
    return 0


def register(commands: Commands) -> None:
    rec = commands.add("record", "record Kafka topics into a compressed, self-describing file", cmd_record)
    rec.add_argument("-o", "--output", type=Path, required=True)
    rec.add_argument("--topic", action="append", help="repeatable (default: raw telemetry and lots)")
    rec.add_argument("--from-start", action="store_true", help="everything retained (default: from now on)")
    rec.add_argument("--since", type=utc_time, help=f"first record time, {TIME_FORMATS}")
    rec.add_argument("--until", type=utc_time, help=f"last record time, {TIME_FORMATS}")
    rec.add_argument("--for-s", type=float, help="stop after this many seconds")
    rec.add_argument("--idle-s", type=float, help="stop after this long without a new message")
    rec.add_argument("--note", default="")
    rep = commands.add("replay", "publish a recording into a sandbox (topic prefix) at 1x, Nx or max speed", cmd_replay)
    rep.add_argument("recording", type=Path)
    rep.add_argument("--speed", type=float, default=1.0)
    rep.add_argument("--max-speed", action="store_true")
    rep.add_argument("--replay-id")
    what = commands.add("whatif", "replay through sandboxed services with a model version and rule set", cmd_whatif)
    what.add_argument("recording", type=Path)
    what.add_argument("--model", required=True, help="model version (LINEWATCH_REGISTRY)")
    what.add_argument("--compare", help="a second model version, side by side")
    what.add_argument("--rules", type=Path, help="alarm rules file (default: deploy/alerter/rules.yaml)")
    what.add_argument("--labels", type=Path, help="fault labels (JSON lines, `linewatch simulate --labels`)")
    what.add_argument("--speed", type=float, default=60.0)
    what.add_argument("--max-speed", action="store_true")
    imp = commands.add("import", "make a recording from a CSV file or an InfluxDB time range", cmd_import)
    imp.add_argument("source", choices=["csv", "influx"])
    imp.add_argument("-o", "--output", type=Path, required=True)
    add_csv_arguments(imp)
    imp.add_argument("--start", type=utc_time, help=f"influx: first time, {TIME_FORMATS}")
    imp.add_argument("--end", type=utc_time, help=f"influx: end time, {TIME_FORMATS}")
    commands.group("bench", "benchmarks that print figures")
    bench = commands.add("bench replay", "maximum-speed replay against the raw producer ceiling", cmd_bench_replay)
    bench.add_argument("--samples", type=int, default=600_000)
    bench.add_argument("--frame-samples", type=int, default=100, help="samples per Kafka record")
