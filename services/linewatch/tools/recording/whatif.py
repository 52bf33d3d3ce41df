"""What-if runs: a recording replayed into a sandbox (its own topics, consumer groups and InfluxDB database,
no notifications) through the real validator, scorer, alerter and writer, with a chosen model version and
rule set; the alarms that would have fired, their KPIs and, with labels, the detection figures."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from linewatch.core.commandline import UsageError
from linewatch.core.contract import AlarmEvent, alarm_event_decoder, raises_alarm
from linewatch.core.kafka import RecordProducer, TopicReader, ensure_topics, kafka_python_security
from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import InfluxSettings, KafkaSettings
from linewatch.services.alerter import kpi
from linewatch.services.scorer import registry as model_registry
from linewatch.storage.influx import influxql
from linewatch.tools.devstack import free_port
from linewatch.tools.drill import fault_alarms, wait_quiet
from linewatch.tools.launcher import ServiceProcess, stop_all
from linewatch.tools.recording.recorder import (
    RecordedMessage,
    ReplayPlan,
    in_time_order,
    read_messages,
    replay,
    sandbox_database,
    sandbox_env,
    sandbox_prefix,
    sandbox_topics,
)


@dataclass
class SandboxRun:
    version: str
    replay_id: str
    events: list[AlarmEvent] = field(default_factory=list)

    def raised(self) -> list[AlarmEvent]:
        return [e for e in self.events if raises_alarm(e.kind, e.state, e.previous)]


def sandbox_registry(source: Path, version: str, into: Path, key: bytes) -> None:
    """A registry holding only `version`, made ACTIVE once it verifies, as the scorer's own command would."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / version, into / version)
    model_registry.activate(into, key, version)


def run_sandboxes(
    messages: list[RecordedMessage],
    versions: list[str],
    kafka: KafkaSettings,
    influx: InfluxSettings,
    registry: Path,
    rules_file: Path | None,
    speed: float | None,
    run_dir: Path,
    signing_key: bytes,
    base_env: dict[str, str],
) -> list[SandboxRun]:
    """One sandbox per version, all at once: they start up together and, paced, see the replay at the same
    moments; each has its own topics, groups, database and registry."""
    runs = [SandboxRun(version, f"whatif-{uuid.uuid4().hex[:8]}") for version in versions]
    processes: dict[str, list[ServiceProcess]] = {}
    for run in runs:
        env = (
            base_env
            | sandbox_env(run.replay_id, messages)
            | {
                "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LINEWATCH_INFLUX__URL": influx.url,
                "LINEWATCH_INFLUX__API": influx.api,
                "LINEWATCH_API_PORT": str(free_port()),
                "LINEWATCH_REGISTRY": str(run_dir / run.replay_id / "models"),
                "LINEWATCH_MODEL_SIGNING_KEY": signing_key.decode(),
            }
        )
        if rules_file is not None:
            env["LINEWATCH_RULES_FILE"] = str(rules_file)
        sandbox_registry(registry, run.version, run_dir / run.replay_id / "models", signing_key)
        ensure_topics(sandbox_kafka(kafka, run), sandbox_topics(run.replay_id).all())
        influxql(influx, f'CREATE DATABASE "{sandbox_database(run.replay_id)}"')  # 1.x; on 2.x make the bucket first
        processes[run.replay_id] = [
            ServiceProcess(name, env, run_dir / run.replay_id / f"{name}.log") for name in PIPELINE
        ]
    everyone = [process for group in processes.values() for process in group]
    try:
        for process in everyone:
            process.start()
        producer = RecordProducer(kafka.bootstrap_servers, kafka_python_security(kafka))
        # The services read their new topics from the start: the replay need not wait for them to be up.
        replays = [
            threading.Thread(
                target=replay,
                args=(messages, ReplayPlan(speed, run.replay_id, sandbox_prefix(run.replay_id).__add__), producer.send),
                name=f"replay-{run.replay_id}",
            )
            for run in runs
        ]
        for thread in replays:
            thread.start()
        for thread in replays:
            thread.join()
        producer.close()
        for run in runs:
            wait_quiet(sandbox_kafka(kafka, run), processes[run.replay_id], quiet_s=5.0, timeout_s=3600.0)
            reader = TopicReader(sandbox_kafka(kafka, run), sandbox_topics(run.replay_id).alarms)
            values: list[bytes] = []
            try:
                reader.read(values.append, 2.0)
            finally:
                reader.close()
            run.events = [alarm_event_decoder.decode(value) for value in values]
    finally:
        stop_all(everyone)
    for run in runs:
        run.events.sort(key=lambda e: (e.ts, e.event_id))
    return runs


def sandbox_kafka(kafka: KafkaSettings, run: SandboxRun) -> KafkaSettings:
    return kafka.model_copy(
        update={"topics": sandbox_topics(run.replay_id), "group_prefix": sandbox_prefix(run.replay_id)}
    )


@dataclass
class Detection:
    fault: str
    equipment_id: str
    delay_s: float | None


def detections(run: SandboxRun, labels: list[dict[str, object]]) -> tuple[list[Detection], int]:
    """Per labelled fault: the first alarm on its unit from its start to 5 min after its end; and the raised
    alarms no fault explains."""
    raised = run.raised()
    found: list[Detection] = []
    explained: set[str] = set()
    for label in labels:
        start, end = float(label["start_s"]), float(label["end_s"])  # type: ignore[arg-type]
        hits = fault_alarms(raised, str(label["equipment_id"]), start, end)
        explained |= {e.event_id for e in hits}
        found.append(
            Detection(str(label["fault"]), str(label["equipment_id"]), hits[0].ts.timestamp() - start if hits else None)
        )
    return found, sum(1 for e in raised if e.event_id not in explained)


def kpi_lines(run: SandboxRun, plant: PlantModel, start: datetime, end: datetime) -> list[str]:
    """The alerter's own KPI report over the sandbox's alarm events."""
    rows = [row for row in kpi.rows_of(run.events) if start <= row.ts < end]
    return kpi.compute(rows, start, end, [area.name for area in plant.areas]).lines()


def whatif(
    recording: Path,
    versions: list[str],
    kafka: KafkaSettings,
    influx: InfluxSettings,
    registry: Path,
    rules_file: Path | None,
    speed: float | None,
    labels_file: Path | None,
    out: Callable[[str], None],
    plant: PlantModel,
    signing_key: bytes,
    base_env: dict[str, str] | None = None,
) -> list[SandboxRun]:
    """`base_env`: settings the sandbox services need beyond this process's environment."""
    messages = in_time_order(read_messages(recording))
    if not messages:
        raise UsageError(f"{recording} holds no messages")
    start = datetime.fromtimestamp(messages[0].timestamp_ms / 1000, UTC)
    end = datetime.fromtimestamp(messages[-1].timestamp_ms / 1000 + 3600, UTC)
    labels = [json.loads(line) for line in labels_file.read_text().splitlines()] if labels_file else []
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-whatif-"))
    pace = "maximum speed" if speed is None else f"{speed:g}x"
    out(f"replaying {len(messages)} messages into {len(versions)} sandbox(es) at {pace}: {', '.join(versions)}")
    runs = run_sandboxes(
        messages, versions, kafka, influx, registry, rules_file, speed, run_dir, signing_key, base_env or {}
    )
    for run in runs:
        out(f"model {run.version}: sandbox {run.replay_id}, {len(run.raised())} alarm(s) would have been raised")
        for event in run.raised()[:40]:
            out(f"  {event.ts:%Y-%m-%d %H:%M:%S}  {event.priority:<8} {event.alarm_id:<36} {event.message[:60]}")
        for text in kpi_lines(run, plant, start, end):
            out(f"  {text}")
    if labels:
        out("")
        out(f"{'fault':<26}{'unit':<13}" + "".join(f"{'delay s (' + r.version[:12] + ')':>26}" for r in runs))
        per_run = [detections(r, labels) for r in runs]
        for index, label in enumerate(labels):
            delays = [found[index].delay_s for found, _ in per_run]
            cells = "".join(f"{'missed' if d is None else f'{d:.0f}':>26}" for d in delays)
            out(f"{label['fault']!s:<26}{label['equipment_id']!s:<13}{cells}")
        detected = "".join(f"{sum(d.delay_s is not None for d in found)}/{len(found):<24}" for found, _ in per_run)
        out(f"{'detected':<39}{detected}")
        out(f"{'alarms no fault explains':<39}" + "".join(f"{false:<26}" for _, false in per_run))
    out(f"sandbox logs and alarm events: {run_dir}")
    return runs
