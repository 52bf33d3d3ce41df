"""A worker joining a busy one: every record of every partition is processed, and each partition's committed
offset reaches its end. faust sought a worker's partitions back to their committed offsets while its fetcher ran,
and the records fetched again were dropped as already read: stretches never processed, commits stuck or past them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from linewatch.core.kafka import RecordProducer, ensure_topics
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import Broker, wait_until

WORKER = Path(__file__).with_name("rebalancing_worker.py")
TOPIC = "rebalancing-input"
PARTITIONS = 12
RECORDS = 400  # per partition: the first worker has them all fetched, most not yet processed, when the second joins

pytestmark = pytest.mark.reliability


def committed(admin: KafkaAdminClient, group: str) -> dict[int, int]:
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC}


def test_a_joining_worker_loses_no_record_and_stalls_no_commit(broker: Broker, tmp_path: Path) -> None:
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=PARTITIONS)
    ensure_topics(settings, [TOPIC])
    producer = RecordProducer(broker.bootstrap)
    for offset in range(RECORDS):
        for partition in range(PARTITIONS):
            producer.send(TOPIC, partition, f"key-{partition}-{offset % 3}".encode(), b"x" * 200)
    producer.close()

    workers: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> Path:
        out = tmp_path / f"{name}.out"
        command = [sys.executable, str(WORKER), broker.bootstrap, TOPIC, str(PARTITIONS), str(out), "worker"]
        with (tmp_path / f"{name}.log").open("wb") as log:  # the worker holds its own copy
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return out

    group = settings.group("rebalancing")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        first = start("first")
        wait_until("the first worker processing", lambda: first.exists() and first.stat().st_size > 0, 60)
        time.sleep(3.0)  # it holds every partition's records fetched, a few batches processed
        start("second")
        with contextlib.suppress(TimeoutError):  # what was processed tells why; asserted below
            wait_until("every partition committed to its end", lambda: _all_at_end(committed(admin, group)), 150)
        at_end = committed(admin, group)
    finally:
        admin.close()
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    seen: dict[int, set[int]] = {partition: set() for partition in range(PARTITIONS)}
    for out in tmp_path.glob("*.out"):
        for line in out.read_text().splitlines():
            partition, offset = map(int, line.split())
            seen[partition].add(offset)
    never = {p: _stretches(set(range(RECORDS)) - offsets) for p, offsets in seen.items() if len(offsets) < RECORDS}
    logs = {path.name: path.read_text()[-3000:] for path in tmp_path.glob("*.log")}
    assert not never, f"offsets never processed, by partition: {never}; committed: {at_end}; logs: {logs}"
    assert _all_at_end(at_end), f"committed offsets short of {RECORDS}: {at_end}; logs: {logs}"


def _all_at_end(offsets: dict[int, int]) -> bool:
    return len(offsets) == PARTITIONS and all(offset >= RECORDS for offset in offsets.values())


def _stretches(offsets: set[int]) -> list[tuple[int, int]]:
    """[(first, last), ...] of consecutive runs: a failure message that reads."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if runs and runs[-1][1] == offset - 1:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs
