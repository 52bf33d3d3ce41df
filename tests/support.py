"""Helpers for integration tests: run services on a real stack, read back InfluxDB and Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from linewatch.core.contract import (
    AlarmEvent,
    DeadLetter,
    Sample,
    TelemetryFrame,
    deadletter_decoder,
    equipment_fields,
    telemetry_decoder,
)
from linewatch.core.kafka import TopicReader, partition_of
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.kpi import AlarmRow, is_alarm
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import Throttle, load_rules, write_rules
from linewatch.services.alerter.state import UnitState, state_decoder
from linewatch.services.simulator.runner import KafkaPublisher, Manifest, RunPlan, run
from linewatch.simulation.faults import plan_injection
from linewatch.tools.devstack import DevStack, Influxd
from linewatch.tools.launcher import ServiceProcess


def start_services(stack: DevStack, log_dir: Path, *names: str) -> list[ServiceProcess]:
    return [ServiceProcess(name, stack.service_env(), log_dir / f"{name}.log").start() for name in names]


def influx_counts(influxd: Influxd, database: str = "linewatch") -> dict[str, dict[str, int]]:
    """Points per equipment and sensor actually stored (state/lot/recipe context fields left out)."""
    result = influxd.query("SELECT count(*) FROM telemetry GROUP BY equipment", database)
    counts: dict[str, dict[str, int]] = {}
    for series in result["results"][0].get("series", []):  # type: ignore[index]
        columns, values = series["columns"], series["values"][0]
        counts[series["tags"]["equipment"]] = {
            column.removeprefix("count_"): int(value)
            for column, value in zip(columns, values, strict=True)
            if column.startswith("count_")
            and value
            and column not in ("count_state", "count_lot_id", "count_recipe", "count_uncertain")
        }
    return counts


def total(counts: dict[str, dict[str, int]]) -> int:
    return sum(sum(sensors.values()) for sensors in counts.values())


def wait_for_counts(
    influxd: Influxd, expected: dict[str, dict[str, int]], timeout_s: float, alive: Callable[[], bool] = lambda: True
) -> dict[str, dict[str, int]]:
    """Poll until InfluxDB holds the expected total, then give late duplicates a moment to show."""
    deadline = time.monotonic() + timeout_s
    want = total(expected)
    counts: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        counts = influx_counts(influxd)
        if total(counts) >= want:
            time.sleep(2.0)
            return influx_counts(influxd)
        assert alive(), "a service died"
        time.sleep(1.0)
    return counts


def read_dead_letters(
    kafka: KafkaSettings, at_least: int, timeout_s: float = 60.0, settle_s: float = 3.0
) -> list[DeadLetter]:
    """Read the dead-letter topic from the start; after `at_least` letters keep reading `settle_s` more
    so that unexpected extra letters are seen too."""
    reader = TopicReader(kafka, kafka.topics.deadletter)
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            reader.read(lambda value: letters.append(deadletter_decoder.decode(value)), 0.2)
            if settle_until is None and len(letters) >= at_least:
                settle_until = time.monotonic() + settle_s
    finally:
        reader.close()
    return letters


class SimulatorThread(threading.Thread):
    """The plant simulator publishing through kafka-python in the background, ground truth kept, and every frame
    it sent (`sent`, for a reference run on exactly those)."""

    def __init__(self, plant: PlantModel, bootstrap: str, plan: RunPlan) -> None:
        super().__init__(daemon=True)
        self.plant, self.bootstrap, self.plan = plant, bootstrap, plan
        self.sent: list[bytes] = []
        self.manifest: Manifest | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            topics = KafkaSettings().topics
            publisher = KafkaPublisher(self.bootstrap, topics.raw, topics.lots)

            def send(key: str, payload: bytes, timestamp_ms: int) -> None:
                self.sent.append(payload)
                publisher.send_frame(key, payload, timestamp_ms)

            self.manifest = run(self.plant, self.plan, send, send_lot=publisher.send_lot)
            publisher.close()
        except BaseException as exc:
            self.error = exc

    def result(self, timeout_s: float = 300.0) -> Manifest:
        self.join(timeout_s)
        if self.error is not None:
            raise self.error
        assert self.manifest is not None, "simulator did not finish"
        return self.manifest


def per_sensor_mismatches(expected: dict[str, dict[str, int]], stored: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for equipment in sorted(set(expected) | set(stored)):
        want, got = Counter(expected.get(equipment, {})), Counter(stored.get(equipment, {}))
        for sensor in sorted(set(want) | set(got)):
            if want[sensor] != got[sensor]:
                problems.append(f"{equipment}.{sensor}: expected {want[sensor]}, stored {got[sensor]}")
    return problems


def simulate(plant: PlantModel, bootstrap: str, plan: RunPlan) -> Manifest:
    """Run the simulator to the end (in a thread, so a hang fails the test instead of blocking it)."""
    thread = SimulatorThread(plant, bootstrap, plan)
    thread.start()
    return thread.result()


def faulty_plan(
    plant: PlantModel,
    lots_ago: int,
    duration_s: float,
    faults: Sequence[tuple[str, str, float]],
    seed: int,
    frame_samples: int = 100,
    malformed_share: float = 0.0,
) -> RunPlan:
    """A max-speed run starting on a lot boundary `lots_ago` lot windows back, with (fault, unit, offset s)."""
    start = (int(time.time()) // int(plant.lot_duration_s) - lots_ago) * int(plant.lot_duration_s)
    rng = np.random.default_rng(seed)
    injections = [plan_injection(plant, name, unit, start + offset, rng) for name, unit, offset in faults]
    return RunPlan(
        start_s=start,
        duration_s=duration_s,
        frame_samples=frame_samples,
        speed=None,
        seed=seed,
        injections=injections,
        malformed_share=malformed_share,
    )


def read_quiet(kafka: KafkaSettings, topic: str, quiet_s: float = 2.0) -> list[bytes]:
    """Every record's value: read until nothing new came for `quiet_s`."""
    return [record.value for record in records_quiet(kafka, topic, quiet_s)]


def records_quiet(kafka: KafkaSettings, topic: str, quiet_s: float = 2.0) -> list[Any]:
    """Every record of the topic, whole, read until nothing new came for `quiet_s`."""
    reader = TopicReader(kafka, topic)
    records: list[Any] = []
    try:
        reader.read_until_quiet(records.append, quiet_s)
    finally:
        reader.close()
    return records


def keep_broker_state(
    kafka: KafkaSettings, topics: dict[str, Callable[[bytes], Any]], groups: list[str], out: Path
) -> None:
    """After a failure, what the broker holds, to work out offline where a record went: every record of each
    topic (partition, offset, key and what `topics` draws from its value) and each group's committed offsets, as
    JSON lines in `out`."""
    from kafka import KafkaAdminClient

    with out.open("w", encoding="utf-8") as sink:
        for topic, summary in topics.items():
            for record in records_quiet(kafka, topic, 3.0):
                row = [topic, record.partition, record.offset, (record.key or b"").decode(), record.timestamp]
                sink.write(json.dumps([*row, summary(record.value) if record.value else None], default=str) + "\n")
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        try:
            for group in groups:
                offsets = admin.list_group_offsets(group)[group]
                committed = {f"{tp.topic}:{tp.partition}": meta.offset for tp, meta in offsets.items()}
                sink.write(json.dumps(["committed", group, committed]) + "\n")
        finally:
            admin.close()


def commits_short_of_end(kafka: KafkaSettings, inputs: dict[str, list[str]]) -> dict[str, tuple[int | None, int]]:
    """Each service's input partitions whose committed offset (its group's) is short of the log's end:
    `service topic:partition` -> (committed, end). A group that has caught up has none; one stuck commit shows as
    one entry."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    reader = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        short: dict[str, tuple[int | None, int]] = {}
        for service, topics in inputs.items():
            group = kafka.group(service)
            committed = {tp: meta.offset for tp, meta in admin.list_group_offsets(group).get(group, {}).items()}
            partitions = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]
            for tp, end in reader.end_offsets(partitions).items():
                if end and (committed.get(tp) or 0) < end:
                    short[f"{service} {tp.topic}:{tp.partition}"] = (committed.get(tp), end)
        return short
    finally:
        reader.close()
        admin.close()


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver: what notifications reached it."""

    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body)["text"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


T0 = 1_700_000_000.0 - 1_700_000_000.0 % 7200


def frame(
    plant: PlantModel,
    unit: str,
    t0: float,
    n: int,
    state: str = "running",
    lot: str = "EL-SYN1-1",
    recipe: str | None = None,
    period_s: float = 1.0,
    **override: float,
) -> TelemetryFrame:
    """n samples a period apart (default: a second) of a unit at its nominal values, some sensors overridden."""
    equipment = plant.equipment_by_id[unit]
    sensors = plant.classes[equipment.equipment_class].sensors
    values = {name: s.nominal for name, s in sensors.items()} | override
    return TelemetryFrame(
        **equipment_fields(equipment.ref),
        schema_version=1,
        seq=int(t0),
        state=state,  # type: ignore[arg-type]
        units={name: s.unit for name, s in sensors.items()},
        samples=[Sample(ts=datetime.fromtimestamp(t0 + i * period_s, UTC), values=values) for i in range(n)],
        lot_id=lot,
        recipe=recipe,
    )


def short_ends(kafka: KafkaSettings, topic: str) -> dict[int, tuple[int, int]]:
    """Partitions whose end offset as the broker reports it (what faust's table recovery reads up to) is not the
    offset after the last record they hold: Tansu reports a short end after multi-record batches (platform
    notes), and a table restored only up to it comes back behind."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import OffsetSpec

    parts = [TopicPartition(topic, p) for p in range(kafka.partitions)]
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    reported = admin.list_partition_offsets(dict.fromkeys(parts, OffsetSpec.LATEST))
    admin.close()
    held: dict[int, int] = {}
    for record in records_quiet(kafka, topic, 3.0):
        held[record.partition] = max(held.get(record.partition, 0), record.offset + 1)
    ends = {tp.partition: (reported[tp].offset, held.get(tp.partition, 0)) for tp in parts}
    return {p: end for p, end in ends.items() if end[0] != end[1]}


def missing_alarm_events(kafka: KafkaSettings, reference: list[AlarmEvent], out: list[AlarmEvent]) -> str:
    """After a kill, why the alarm events out are not the reference's: which never came out and what came out
    instead (a unit's alarm state that came back from the changelog behind or ahead of where its input was
    committed shows as transitions missed or moved), their units' partitions, and the alarm-state changelog
    partitions whose reported end is short of what they hold."""
    expected = {e.event_id for e in reference}
    came = {e.event_id for e in out}
    never = [e for e in reference if e.event_id not in came]
    lost = sorted((e.alarm_id, e.state, e.ts.isoformat()) for e in never)
    instead = sorted({(e.alarm_id, e.state, e.ts.isoformat()) for e in out if e.event_id not in expected})
    units = {e.equipment_id: partition_of(e.equipment_id.encode(), kafka.partitions) for e in never}
    # A unit's state written with an input offset below an earlier write's went back (a worker's table restored
    # from a changelog that lacked its latest writes): the input in between was never evaluated again.
    went_back: dict[str, list[tuple[int, int, str, int, int]]] = {}
    highest: dict[tuple[str, str], int] = {}
    for record in records_quiet(kafka, "alerter-alarm-state-changelog", 3.0):
        if (unit := (record.key or b"").decode()) in units and record.value:
            for position, offset in state_decoder.decode(record.value).applied.items():
                if offset < highest.get((unit, position), -1):
                    went_back.setdefault(unit, []).append(
                        (record.partition, record.offset, position, highest[unit, position], offset)
                    )
                highest[unit, position] = max(offset, highest.get((unit, position), -1))
    return (
        f"{len(lost)} of {len(expected)} reference alarm events never came out ({len(out)} events out): {lost[:20]}; "
        f"out but not in the reference: {instead[:20]}; their units' partitions {units}; alarm-state changelog "
        f"partitions whose reported end offset is not the end of what they hold (reported, held): "
        f"{short_ends(kafka, 'alerter-alarm-state-changelog')}; their state's writes that went back (changelog "
        f"partition, offset, input, applied before, applied now): {went_back}"
    )


def raises(events: list[AlarmEvent]) -> list[AlarmEvent]:
    """The events that raise an alarm an operator sees."""
    return [e for e in events if is_alarm(msgspec.convert(msgspec.structs.asdict(e), AlarmRow))]


def self_signed_tls(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate for `host` (an IP address) that is its own authority, and its key, in PEM."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server-cert.pem", directory / "server-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def unthrottled_rules(directory: Path) -> Path:
    """The default rules with a notification throttle a max-speed run cannot reach (the default, 10 per 10 min of
    wall clock, would hold back most of it)."""
    defaults = load_rules()
    throttle = Throttle(max_per_window=10_000, window_s=600)
    notifications = defaults.notifications.model_copy(update={"throttle": throttle})
    return write_rules(defaults.model_copy(update={"notifications": notifications}), directory / "rules.yaml")


def reference_alarm_events(plant: PlantModel, sent: list[bytes]) -> list[AlarmEvent]:
    """What an uncrashed alarm engine makes of exactly these frames."""
    engine, units = AlarmEngine(plant, load_rules(), load_alarm_database()), {}  # type: ignore[var-annotated]
    events: list[AlarmEvent] = []
    for payload in sent:
        frame = telemetry_decoder.decode(payload)
        events += engine.on_frame(units.setdefault(frame.equipment_id, UnitState()), frame)
    return events


def linewatch(env: dict[str, str], *args: str) -> str:
    """The CLI in a process of its own with `env` on top of this one's: its output, once it has succeeded cleanly."""
    result = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stdout
