"""Record and replay on the real broker: every message, key, header and per-partition order survives; gaps
are kept at 1x and scaled at 10x; a what-if replay of a faulty run at 120x reproduces the live alarms in a
sandbox that notifies nobody and leaves the live series alone; imports from CSV and InfluxDB."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from support import Hook, faulty_plan, linewatch, read_quiet, simulate

from linewatch.core.commandline import UsageError
from linewatch.core.contract import alarm_event_decoder, raises_alarm, telemetry_decoder
from linewatch.core.kafka import RecordProducer, ensure_topics
from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import InfluxSettings, KafkaSettings
from linewatch.services.simulator.runner import write_labels
from linewatch.tools.devstack import DevStack, free_port
from linewatch.tools.drill import pipeline_env, train, wait_quiet
from linewatch.tools.launcher import ServiceProcess
from linewatch.tools.recording.recorder import (
    REPLAY_HEADER,
    RecordedMessage,
    RecordingWriter,
    RecordPlan,
    ReplayPlan,
    in_time_order,
    read_header,
    read_messages,
    record,
    replay,
    sandbox_env,
    sandbox_prefix,
    sandbox_topics,
)
from linewatch.tools.recording.whatif import whatif


def consume(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 30.0) -> list[object]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=10)
    partitions = [TopicPartition(topic, p) for p in range(kafka.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records += batch
    consumer.close()
    return records


def test_record_then_replay_keeps_messages_keys_headers_and_partition_order(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topic = kafka.topics.raw
    producer = RecordProducer(kafka.bootstrap_servers)
    sent = []
    for i in range(400):
        partition, key = i % kafka.partitions, f"unit-{i % 7}".encode()
        headers = [("trace", f"t{i}".encode()), ("origin", b"\x00\xff binary")]
        producer.send(topic, partition, key, f'{{"n": {i}}}'.encode(), headers)
        sent.append((partition, key, i))
    producer.close()

    path = tmp_path / "run.lwrec.gz"
    with RecordingWriter(path, kafka.bootstrap_servers, [topic], "test") as writer:
        assert record(kafka, RecordPlan([topic], from_start=True, idle_s=2.0), writer) == 400
    header = read_header(path)
    assert header.topics == [topic] and header.schema_versions["telemetry-frame"] == 1
    recorded = list(read_messages(path))
    by_partition: dict[int, list[RecordedMessage]] = defaultdict(list)
    for message in recorded:
        by_partition[message.partition].append(message)
    for partition, messages in by_partition.items():
        assert [m.offset for m in messages] == sorted(m.offset for m in messages)
        assert [json.loads(m.value or b"")["n"] for m in messages] == [i for p, _, i in sent if p == partition]
        assert all(m.headers[1] == ("origin", b"\x00\xff binary") for m in messages)

    replay_id = "order-test"
    ensure_topics(kafka, [sandbox_prefix(replay_id) + topic])
    producer = RecordProducer(kafka.bootstrap_servers)
    plan = ReplayPlan(None, replay_id, lambda t: sandbox_prefix(replay_id) + t)
    assert replay(in_time_order(recorded), plan, producer.send) == 400
    producer.close()
    replayed = consume(kafka, sandbox_prefix(replay_id) + topic, 400)
    assert len(replayed) == 400
    original = {(m.partition, m.offset - min(x.offset for x in by_partition[m.partition])): m for m in recorded}
    for record_ in replayed:
        source = original[(record_.partition, record_.offset)]  # type: ignore[attr-defined]
        assert (record_.key, record_.value) == (source.key, source.value)  # type: ignore[attr-defined]
        assert list(record_.headers) == [*source.headers, (REPLAY_HEADER, replay_id.encode())]  # type: ignore[attr-defined]


def test_replay_keeps_gaps_at_1x_and_scales_them_at_10x(kafka: KafkaSettings) -> None:
    """The replayed records' own timestamps (stamped by the producer as each is sent) show the pacing."""
    gaps_ms = [0, 200, 700, 1500, 1600, 2400]
    messages = [RecordedMessage("t", 0, i, 1_700_000_000_000 + g, b"k", f"{i}".encode()) for i, g in enumerate(gaps_ms)]
    for speed in (1.0, 10.0):
        replay_id = f"timing-{speed:g}x"
        topic = sandbox_prefix(replay_id) + "t"
        ensure_topics(kafka, [topic])
        producer = RecordProducer(kafka.bootstrap_servers)
        prefix = sandbox_prefix(replay_id)
        replay(messages, ReplayPlan(speed, replay_id, prefix.__add__), producer.send)
        producer.close()
        received = sorted(consume(kafka, topic, len(messages)), key=lambda r: r.offset)  # type: ignore[attr-defined]
        assert [r.value for r in received] == [m.value for m in messages]  # type: ignore[attr-defined]
        stamps = [r.timestamp for r in received]  # type: ignore[attr-defined]
        offsets = [(t - stamps[0]) / 1000 for t in stamps]
        for offset, gap in zip(offsets, gaps_ms, strict=True):
            assert abs(offset - gap / 1000 / speed) < 0.05, (speed, offsets)


def test_whatif_paced_reproduces_the_live_alarms_without_notifying_or_touching_live_series(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Hook.received = []
    env = pipeline_env(stack, tmp_path) | {"LINEWATCH_NOTIFY__WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook"}
    train(env, 1.0)
    live = [ServiceProcess(name, env, tmp_path / f"live-{name}.log").start() for name in PIPELINE]
    try:
        faults = [("furnace_overshoot", "S1-FURN-01", 500), ("seal_temperature_drop", "C2-SEAL-01", 1150)]
        plan = faulty_plan(plant, 1, 1800, faults, seed=3, frame_samples=60)
        simulate(plant, kafka.bootstrap_servers, plan)
        wait_quiet(kafka, live, quiet_s=5.0, timeout_s=600.0)
    finally:
        for process in live:
            process.stop()
    live_raised = [
        (e.alarm_id, e.ts)
        for e in sorted(
            map(alarm_event_decoder.decode, read_quiet(kafka, kafka.topics.alarms)), key=lambda e: (e.ts, e.event_id)
        )
        if raises_alarm(e.kind, e.state, e.previous)
    ]
    assert len({a for a, _ in live_raised}) >= 2, live_raised
    notified_live = len(Hook.received)
    assert notified_live >= 1

    recording = tmp_path / "shift.lwrec.gz"
    with RecordingWriter(recording, kafka.bootstrap_servers, [kafka.topics.raw, kafka.topics.lots]) as writer:
        record(kafka, RecordPlan([kafka.topics.raw, kafka.topics.lots], from_start=True, idle_s=3.0), writer)
    frames = [telemetry_decoder.decode(m.value or b"") for m in read_messages(recording) if m.topic == kafka.topics.raw]
    assert len(frames) == len(plant.equipment) * 1800 / 60

    def live_points() -> int:
        result = stack.influxd.query('SELECT count("event_id") FROM "alarm_event"', stack.database)
        series = result["results"][0].get("series", [])  # type: ignore[index]
        return int(series[0]["values"][0][1]) if series else 0

    before = live_points()
    version = (Path(env["LINEWATCH_REGISTRY"]) / "ACTIVE").read_text().strip()
    influx = InfluxSettings(url=stack.influxd.url, database=stack.database)
    lines: list[str] = []
    began = time.monotonic()
    [run] = whatif(
        recording,
        [version],
        kafka,
        influx,
        Path(env["LINEWATCH_REGISTRY"]),
        None,
        120.0,
        None,
        lines.append,
        plant,
        env["LINEWATCH_MODEL_SIGNING_KEY"].encode(),
        env,
    )
    took = time.monotonic() - began
    sandbox_raised = [(e.alarm_id, e.ts) for e in run.raised()]
    assert sandbox_raised == live_raised, "\n".join(lines)
    assert took >= 1800 / 120, "a 120x replay of half an hour takes at least 15 s"
    assert len(Hook.received) == notified_live, "the sandbox notified someone"
    assert live_points() == before, "the sandbox wrote into the live database"
    sandbox = stack.influxd.query(
        'SELECT count("event_id") FROM "alarm_event"', f"linewatch_sandbox_{run.replay_id.replace('-', '_')}"
    )
    assert sandbox["results"][0].get("series"), "the sandbox's own database holds its alarm events"  # type: ignore[index]
    assert any("alarm KPIs" in line for line in lines)

    # Two model versions side by side, at maximum speed, with the run's fault labels.
    train(env, 0.5)
    second = (Path(env["LINEWATCH_REGISTRY"]) / "ACTIVE").read_text().strip()
    assert second != version
    labels = tmp_path / "labels.jsonl"
    write_labels(labels, plan)
    lines.clear()
    runs = whatif(
        recording,
        [version, second],
        kafka,
        influx,
        Path(env["LINEWATCH_REGISTRY"]),
        None,
        None,
        labels,
        lines.append,
        plant,
        env["LINEWATCH_MODEL_SIGNING_KEY"].encode(),
        env,
    )
    assert [r.version for r in runs] == [version, second]
    assert runs[0].raised() == run.raised() or [(e.alarm_id, e.ts) for e in runs[0].raised()] == live_raised
    table = "\n".join(lines)
    assert f"delay s ({version[:12]})" in table and f"delay s ({second[:12]})" in table, table
    assert "furnace_overshoot" in table and "seal_temperature_drop" in table and "detected" in table
    assert len(Hook.received) == notified_live
    hook.shutdown()


def test_import_from_csv_and_from_an_influxdb_range(stack: DevStack, tmp_path: Path) -> None:
    import asyncio

    from linewatch.storage.influx import InfluxWriter

    csv_file = tmp_path / "historian.csv"
    rows = ["Time,DEW_PT,H2S_PPM"] + [f"2026-11-01T10:00:{s:02d}Z,{-48 + s / 10},{0.08}" for s in range(30)]
    csv_file.write_text("\n".join(rows) + "\n")
    env = stack.service_env()
    run = functools.partial(linewatch, env)

    out = tmp_path / "csv.lwrec.gz"
    run("import", "csv", "--file", str(csv_file), "--equipment", "S2-DRY-01", "--timestamp-column", "Time",
        "--map", "DEW_PT=dew_point", "--map", "H2S_PPM=h2s", "-o", str(out))  # fmt: skip
    frames = [telemetry_decoder.decode(m.value or b"") for m in read_messages(out)]
    samples = [s for f in frames for s in f.samples]
    assert len(samples) == 30 and samples[5].values == {"dew_point": -47.5, "h2s": 0.08}
    assert {f.equipment_id for f in frames} == {"S2-DRY-01"} and read_header(out).source == str(csv_file)

    # The same readings written to InfluxDB come back as a recording of that time range.
    lines = [
        f"telemetry,area=electrolyte,equipment=S2-DRY-01,equipment_class=dry_room,line=syn-2,site=plant-01 "
        f'dew_point={s.values["dew_point"]},h2s={s.values["h2s"]},state="running" {int(s.ts.timestamp() * 1e9)}'
        for s in samples
    ]

    async def write() -> None:
        writer = InfluxWriter(InfluxSettings(url=stack.influxd.url, database=stack.database))
        await writer.write("\n".join(lines).encode())
        await writer.close()

    asyncio.run(write())
    out = tmp_path / "influx.lwrec.gz"
    run("import", "influx", "--start", "2026-11-01T09:00:00Z", "--end", "2026-11-01T11:00:00Z", "-o", str(out))
    back = [s for m in read_messages(out) for s in telemetry_decoder.decode(m.value or b"").samples]
    assert [(s.ts, s.values) for s in back] == [(s.ts, s.values) for s in samples]


def test_live_recording_takes_what_arrives_after_it_starts(kafka: KafkaSettings, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    topic = kafka.topics.lots
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    for i in range(20):
        producer.send(topic, key=b"before", value=f"{i}".encode(), partition=i % kafka.partitions)
        producer.flush()  # one record a batch: Tansu's end offset is then exact (see the comment below)
    producer.close()
    path = tmp_path / "live.lwrec.gz"
    count: list[int] = []

    def late_messages() -> None:
        time.sleep(2.0)
        late = RecordProducer(kafka.bootstrap_servers)
        for i in range(30):
            late.send(topic, i % kafka.partitions, b"after", f"{i}".encode())
        late.close()

    threading.Thread(target=late_messages, daemon=True).start()
    with RecordingWriter(path, kafka.bootstrap_servers, [topic]) as writer:
        count.append(record(kafka, RecordPlan([topic], for_s=6.0), writer))
    keys = [m.key for m in read_messages(path)]
    assert keys.count(b"after") == 30
    # Tansu's end offsets point into the last multi-record batch; with one record a batch they are exact, so
    # what was there before the recording started must not appear.
    assert keys.count(b"before") == 0, keys


def test_recording_a_topic_the_broker_does_not_have_says_so(kafka: KafkaSettings, tmp_path: Path) -> None:
    missing = f"{kafka.topics.raw}.misspelt"
    path = tmp_path / "none.lwrec.gz"
    said = pytest.raises(UsageError, match=f"has no topic {missing}: check the name")
    with said, RecordingWriter(path, kafka.bootstrap_servers, [missing]) as writer:
        record(kafka, RecordPlan([kafka.topics.raw, missing], for_s=5.0), writer)
    assert not path.exists()  # no empty recording left behind


def test_a_replay_of_last_months_import_is_validated_in_its_sandbox_not_refused_as_too_old(
    stack: DevStack, kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Readings of a dry room, five weeks before now: beyond the live validator's 7 days.
    start = time.time() - 35 * 86_400
    rows = [f"{datetime.fromtimestamp(start + s, UTC).isoformat()},{-48 + s / 100}\n" for s in range(120)]
    csv_file = tmp_path / "incident.csv"
    csv_file.write_text("Time,DEW_PT\n" + "".join(rows))
    recording = tmp_path / "incident.lwrec.gz"
    env = stack.service_env()
    linewatch(env, "import", "csv", "--file", str(csv_file), "--equipment", "S2-DRY-01", "--timestamp-column",
              "Time", "--map", "DEW_PT=dew_point", "-o", str(recording))  # fmt: skip
    messages = in_time_order(read_messages(recording))
    replay_id = "incident"
    ensure_topics(kafka, sandbox_topics(replay_id).all())
    producer = RecordProducer(kafka.bootstrap_servers)
    replay(messages, ReplayPlan(None, replay_id, sandbox_prefix(replay_id).__add__), producer.send)
    producer.close()

    validator = ServiceProcess("validator", env | sandbox_env(replay_id, messages), tmp_path / "validator.log").start()
    try:
        topics = sandbox_topics(replay_id)
        valid = [telemetry_decoder.decode(r.value) for r in consume(kafka, topics.valid, len(messages))]  # type: ignore[attr-defined]
    finally:
        validator.stop()
    assert sum(len(frame.samples) for frame in valid) == 120
    assert consume(kafka, topics.deadletter, 1, timeout_s=3.0) == []
