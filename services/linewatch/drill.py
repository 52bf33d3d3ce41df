"""`linewatch drill`: a simulated shift through the whole pipeline on the embedded stack, then the alarm KPI
report, and for each injected fault whether it raised an alarm and how many alarms its area saw next."""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from linewatch.console import out
from linewatch.contract import ServiceStats
from linewatch.devstack import DevStack, free_port
from linewatch.kafka import ensure_topics
from linewatch.launcher import ServiceProcess
from linewatch.liveview import StatsReader
from linewatch.settings import KafkaSettings

WATCHED = ("validator", "scorer", "alerter", "writer")
# What shows the backlog is worked off; the writer also writes everyone's stats, so not all its counters.
PROGRESS = {
    "validator": ("messages_in",),
    "scorer": ("frames_in",),
    "alerter": ("frames_in", "scores_in", "alarm_events"),
    "writer": ("records_in.linewatch.telemetry.valid", "records_in.linewatch.scores", "records_in.linewatch.alarms"),
}


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


def train(env: dict[str, str], hours: float, log: Path) -> None:
    with log.open("ab") as sink:
        subprocess.run(
            [sys.executable, "-m", "scorer", "train", "--hours", str(hours), "--active"],
            env=os.environ | env,
            check=True,
            stdout=sink,
            stderr=sink,
        )


def wait_quiet(kafka: KafkaSettings, processes: list[ServiceProcess], quiet_s: float, timeout_s: float) -> None:
    """Until no watched service has counted anything new for `quiet_s` (the backlog is worked off)."""
    reader = StatsReader(kafka)
    seen: dict[str, list[int]] = {}
    changed = time.monotonic()
    deadline = changed + timeout_s
    try:
        while time.monotonic() < deadline:
            updates: list[ServiceStats] = []
            reader.poll(updates.append, 0.5)
            for update in updates:
                if update.service not in PROGRESS:
                    continue
                progress = [update.counters.get(name, 0) for name in PROGRESS[update.service]]
                if seen.get(update.service) != progress:
                    seen[update.service], changed = progress, time.monotonic()
            if time.monotonic() - changed > quiet_s and len(seen) == len(WATCHED):
                return
            dead = [p.name for p in processes if not p.alive()]
            if dead:
                raise RuntimeError(f"service(s) died: {dead}")
        raise TimeoutError("the pipeline did not settle")
    finally:
        reader.close()


def drill(hours: float, faults: list[str], train_hours: float, seed: int) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-drill-"))
    out(f"run directory (logs, labels): {run_dir}")
    with DevStack() as stack:
        env = pipeline_env(stack, run_dir)
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all())
        started = time.monotonic()
        train(env, train_hours, run_dir / "train.log")
        out(f"trained on {train_hours:g} h of normal operation in {time.monotonic() - started:.0f} s")
        processes = [ServiceProcess(name, env, run_dir / f"{name}.log").start() for name in WATCHED]
        # The shift ends an hour before now and starts on a lot boundary, so lots are whole.
        start_s = math.floor((time.time() - hours * 3600 - 3600) / 7200) * 7200
        start, end = datetime.fromtimestamp(start_s, UTC), datetime.fromtimestamp(start_s + hours * 3600, UTC)
        args = ["--start", start.isoformat(), "--duration-s", str(hours * 3600), "--max-speed", "--seed", str(seed)]
        args += ["--labels", str(run_dir / "labels.jsonl")]
        for fault in faults:
            args += ["--fault", fault]
        try:
            started = time.monotonic()
            with (run_dir / "simulator.log").open("ab") as sink:
                subprocess.run(
                    [sys.executable, "-m", "simulator", *args],
                    env=os.environ | env,
                    check=True,
                    stdout=sink,
                    stderr=sink,
                )
            wait_quiet(kafka, processes, quiet_s=8.0, timeout_s=3600.0)
            out(f"simulated {hours:g} h {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC in {time.monotonic() - started:.0f} s")
        finally:
            for process in reversed(processes):
                process.stop()
        kpi = [sys.executable, "-m", "alerter", "alarms", "kpi", "--start", start.isoformat(), "--end", end.isoformat()]
        out("$ linewatch alarms kpi --start " + start.isoformat() + " --end " + end.isoformat())
        subprocess.run(kpi, env=os.environ | env, check=True)
        if faults:
            report_faults(stack, run_dir / "labels.jsonl")
    return 0


RAISED = "FROM alarm_event WHERE state = 'unacknowledged' AND previous <> 'unacknowledged' AND kind = 'transition'"
TEN_MINUTES_NS = 600_000_000_000


def report_faults(stack: DevStack, labels: Path) -> None:
    """Per labelled fault: the first alarm on its unit (up to 5 min after it ends), and the alarm count in
    each area over the 10 minutes from its start. Equipment ids come from our own label file."""
    for row in labels.read_text().splitlines():
        label = json.loads(row)
        begin_ns, end_ns = int(label["start_s"] * 1e9), int(label["end_s"] * 1e9)
        unit = label["equipment_id"]
        raised = stack.influxd.query(
            f"SELECT alarm_id, message {RAISED} AND equipment = '{unit}' "
            f"AND time >= {begin_ns} AND time < {end_ns + TEN_MINUTES_NS // 2}",
            stack.database,
        )
        series = raised["results"][0].get("series", [])  # type: ignore[index]
        first = series[0]["values"][0] if series else None
        area_rows = stack.influxd.query(
            f"SELECT count(event_id) {RAISED} AND annunciate = true "
            f"AND time >= {begin_ns} AND time < {begin_ns + TEN_MINUTES_NS} GROUP BY area",
            stack.database,
        )
        in_area = {
            s["tags"]["area"]: s["values"][0][1]
            for s in area_rows["results"][0].get("series", [])  # type: ignore[index]
        }
        if first is None:
            out(f"fault {label['fault']} on {unit}: NO ALARM")
            continue
        delay = first[0] / 1e9 - label["start_s"]
        out(
            f"fault {label['fault']} on {unit}: alarm after {delay:.0f} s: {first[1]} — {first[2]}; "
            f"alarms in the 10 min after the fault start per area: {in_area}"
        )
