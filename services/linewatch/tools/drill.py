"""`linewatch drill`: a simulated shift through the whole pipeline on the embedded stack, then the alarm KPI
report, and for each injected fault whether it raised an alarm and how many alarms its area saw next."""

from __future__ import annotations

import json
import math
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from linewatch.core.console import out
from linewatch.core.contract import AlarmEvent, ServiceStats
from linewatch.core.kafka import ensure_topics
from linewatch.core.plant import PlantModel, load_plant, read_plant
from linewatch.core.services import PIPELINE, service
from linewatch.core.settings import DEFAULT_PLANT_FILE, InfluxSettings, KafkaSettings
from linewatch.services.alerter.commands import kpi_report
from linewatch.services.simulator.commands import parse_fault
from linewatch.storage.measurements import ALARM_EVENT, RAISED
from linewatch.tools.devstack import DevStack, free_port
from linewatch.tools.launcher import ServiceProcess
from linewatch.tools.liveview import StatsReader


def pipeline_env(stack: DevStack, run_dir: Path) -> dict[str, str]:
    """Services pointed at the stack, with a throw-away model key and operator token for this run."""
    token = secrets.token_hex(16)
    return stack.service_env() | {
        "LINEWATCH_REGISTRY": str(run_dir / "models"),
        "LINEWATCH_MODEL_SIGNING_KEY": secrets.token_hex(32),
        "LINEWATCH_API_PORT": str(free_port()),
        "LINEWATCH_API_TOKENS": json.dumps({"operator": token}),
        "LINEWATCH_OPERATOR_TOKEN": token,
    }


def train(env: dict[str, str], hours: float, seed: int = 1) -> str:
    """Train, sign and activate a model version into the registry the services of `env` read."""
    plant = load_plant(Path(env.get("LINEWATCH_PLANT_FILE", DEFAULT_PLANT_FILE)))
    key = env["LINEWATCH_MODEL_SIGNING_KEY"].encode()
    return train_into(plant, Path(env["LINEWATCH_REGISTRY"]), key, hours, seed)


def train_into(plant: PlantModel, registry: Path, key: bytes, hours: float, seed: int, lots: int = 1) -> str:
    """Train, sign and activate a model version on simulated normal operation, in this process: `hours` of each
    of `lots` consecutive lots (`simulated_training`)."""
    from linewatch.services.scorer.commands import simulated_training
    from linewatch.services.scorer.training import train_version

    frames, source = simulated_training(plant, hours, seed, lots)
    version, _, _ = train_version(plant, frames, source, registry, key, ["ACTIVE"], seed=seed)
    return version


def past_start_s(span_s: float) -> float:
    """Where a simulated run of `span_s` starts so that it ends an hour before now and starts on a lot
    boundary: its lots are whole and no sample lies in the future."""
    return math.floor((time.time() - span_s - 3600) / 7200) * 7200


def wait_quiet(
    kafka: KafkaSettings,
    processes: list[ServiceProcess],
    quiet_s: float,
    timeout_s: float,
    on_stats: Callable[[ServiceStats], None] | None = None,
) -> None:
    """Until no watched service has counted anything new for `quiet_s` (the backlog is worked off); every
    report read on the way goes to `on_stats`."""
    reader = StatsReader(kafka)
    topics = kafka.topics.model_dump()
    progress = {p.name: service(p.name).progress_counters(topics) for p in processes}
    seen: dict[tuple[str, str], list[int]] = {}  # per worker: a service may run several
    changed = time.monotonic()
    deadline = changed + timeout_s
    try:
        while time.monotonic() < deadline:
            updates: list[ServiceStats] = []
            reader.poll(updates.append, 0.5)
            for update in updates:
                if on_stats is not None:
                    on_stats(update)
                if update.service not in progress:
                    continue
                counts = [update.counters.get(name, 0) for name in progress[update.service]]
                if seen.get((update.service, update.instance)) != counts:
                    seen[(update.service, update.instance)], changed = counts, time.monotonic()
            if time.monotonic() - changed > quiet_s and {name for name, _ in seen} == set(progress):
                return
            dead = [p.name for p in processes if not p.alive()]
            if dead:
                raise RuntimeError(f"service(s) died: {dead}")
        raise TimeoutError("the pipeline did not settle")
    finally:
        reader.close()


def drill(hours: float, faults: list[str], train_hours: float, seed: int) -> int:
    plant = read_plant(DEFAULT_PLANT_FILE)
    for spec in faults:
        parse_fault(spec, plant)  # a mistyped fault is said now, not after training and start-up
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-drill-"))
    out(f"run directory (logs, labels): {run_dir}")
    with DevStack() as stack:
        env = pipeline_env(stack, run_dir)
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all())
        started = time.monotonic()
        train(env, train_hours)
        out(f"trained on {train_hours:g} h of normal operation in {time.monotonic() - started:.0f} s")
        processes = [ServiceProcess(name, env, run_dir / f"{name}.log").start() for name in PIPELINE]
        start_s = past_start_s(hours * 3600)
        start, end = datetime.fromtimestamp(start_s, UTC), datetime.fromtimestamp(start_s + hours * 3600, UTC)
        args = ["--start", start.isoformat(), "--duration-s", str(hours * 3600), "--max-speed", "--seed", str(seed)]
        args += ["--labels", str(run_dir / "labels.jsonl")]
        for fault in faults:
            args += ["--fault", fault]
        try:
            started = time.monotonic()
            ServiceProcess("simulator", env, run_dir / "simulator.log", tuple(args)).run(timeout_s=6 * 3600)
            wait_quiet(kafka, processes, quiet_s=8.0, timeout_s=3600.0)
            out(f"simulated {hours:g} h {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC in {time.monotonic() - started:.0f} s")
        finally:
            for process in reversed(processes):
                process.stop()
        out(f"alarm KPIs (`linewatch alarms kpi --start {start.isoformat()} --end {end.isoformat()}`):")
        influx = InfluxSettings(url=stack.influxd.url, database=stack.database)
        for text in kpi_report(influx, plant, start, end).lines():
            out(text)
        missed = report_faults(stack, run_dir / "labels.jsonl") if faults else 0
    return 1 if missed else 0


RAISED_EVENTS = f"FROM {ALARM_EVENT} WHERE {RAISED}"
TEN_MINUTES_NS = 600_000_000_000
RECOVERY_S = 300.0  # an alarm up to 5 min after a fault ends still belongs to it


def fault_alarms(raised: list[AlarmEvent], equipment_id: str, start_s: float, end_s: float) -> list[AlarmEvent]:
    """The raised alarms a fault on a unit explains: on that unit, from its start to RECOVERY_S after its end."""
    return [e for e in raised if e.equipment_id == equipment_id and start_s <= e.ts.timestamp() <= end_s + RECOVERY_S]


def report_faults(stack: DevStack, labels: Path) -> int:
    """Per labelled fault: the first alarm on its unit (up to 5 min after it ends), and the alarm count in
    each area over the 10 minutes from its start; returns how many faults raised no alarm. Equipment ids come
    from our own label file."""
    missed = 0
    for row in labels.read_text().splitlines():
        label = json.loads(row)
        begin_ns, end_ns = int(label["start_s"] * 1e9), int(label["end_s"] * 1e9)
        unit = label["equipment_id"]
        raised = stack.influxd.query(
            f"SELECT alarm_id, message {RAISED_EVENTS} AND equipment = '{unit}' "
            f"AND time >= {begin_ns} AND time < {end_ns + int(RECOVERY_S * 1e9)}",
            stack.database,
        )
        series = raised["results"][0].get("series", [])  # type: ignore[index]
        first = series[0]["values"][0] if series else None
        area_rows = stack.influxd.query(
            f"SELECT count(event_id) {RAISED_EVENTS} AND annunciate = true "
            f"AND time >= {begin_ns} AND time < {begin_ns + TEN_MINUTES_NS} GROUP BY area",
            stack.database,
        )
        in_area = {
            s["tags"]["area"]: s["values"][0][1]
            for s in area_rows["results"][0].get("series", [])  # type: ignore[index]
        }
        if first is None:
            out(f"fault {label['fault']} on {unit}: NO ALARM")
            missed += 1
            continue
        delay = first[0] / 1e9 - label["start_s"]
        out(
            f"fault {label['fault']} on {unit}: alarm after {delay:.0f} s: {first[1]} — {first[2]}; "
            f"alarms in the 10 min after the fault start per area: {in_area}"
        )
    if missed:
        out(f"{missed} fault(s) raised no alarm")
    return missed
