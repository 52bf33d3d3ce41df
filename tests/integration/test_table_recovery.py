"""A table written a batch at a time is restored whole by a worker that takes over after a kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from linewatch.core.kafka import RecordProducer, TopicReader, ensure_topics
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import Broker

WORKER = Path(__file__).with_name("batched_table_worker.py")
LAST = 20
CHANGELOG = "batched-table-values-changelog"  # faust: {app id}-{table}-changelog

pytestmark = pytest.mark.reliability


def run_worker(mode: str, broker: Broker, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(WORKER), mode, broker.bootstrap, str(out), str(LAST), "worker"],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9, f"{mode} worker ended with {done.returncode}: {done.stderr[-2000:]}"
    return done.stderr


def test_restored_table_holds_every_key_of_the_last_batch(broker: Broker, tmp_path: Path) -> None:
    # Tansu reports a changelog's end as its last batch's base + 1; recovery read only that far and restored the
    # batch's other keys from their previous write (the cause of the alerter's missed transitions after a kill).
    ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=1), ["batched-table-input"])
    producer = RecordProducer(broker.bootstrap)
    for value in range(1, LAST + 1):
        producer.send("batched-table-input", 0, b"line", str(value).encode())
    producer.close()
    dump = tmp_path / "restored.json"

    run_worker("write", broker, dump)
    # What the writer left in the changelog: tells a write that never arrived (faust's producer flush returned
    # before its last send) from a recovery that stopped short.
    logged: dict[str, str] = {}
    reader = TopicReader(KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=1), CHANGELOG, 10)
    reader.read_records(lambda record: logged.update({record.key.decode(): record.value.decode()}), 2.0)
    reader.close()
    restoring = run_worker("restore", broker, dump)

    restored = json.loads(dump.read_text())
    expected = {f"key-{i}": str(LAST) for i in range(10)}
    assert logged == expected, f"the writer's changelog: {logged}"
    assert restored == expected, (restored, [line for line in restoring.splitlines() if "changelog" in line])
