"""Health probes, the broker watch's report of a loss, the supervisor's restarts and the log flood limit, without
servers (the broker kill itself: tests/integration/test_broker_loss.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest

from linewatch.core.contract import deadletter_decoder
from linewatch.core.health import EXIT_BROKER_STATE_LOST, PENDING_REPORT, BrokerWatch, HealthState, serve_health
from linewatch.core.logs import RepeatLimit, configure
from linewatch.core.settings import HealthSettings, KafkaSettings
from linewatch.core.stats import StatsCounter
from linewatch.tools.devstack import free_port
from linewatch.tools.launcher import ServiceProcess, Supervisor

pytestmark = pytest.mark.reliability


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as refusal:
        return refusal.code, json.loads(refusal.read() or b"{}") if refusal.code != 404 else {}


def test_probes_answer_200_or_503_with_the_reason() -> None:
    state = HealthState(live_timeout_s=5)
    port = free_port()
    server = serve_health(state, "127.0.0.1", port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/livez") == (200, {"ok": True, "reason": "alive"})
        assert get(f"{base}/readyz") == (503, {"ok": False, "reason": "starting"})
        state.ready, state.reason = True, "ready"
        assert get(f"{base}/readyz")[0] == 200
        state.last_beat = time.monotonic() - 60  # the event loop stopped beating
        status, body = get(f"{base}/livez")
        assert status == 503 and "event loop blocked" in body["reason"]
        assert get(f"{base}/readyz")[0] == 503
        assert get(f"{base}/metrics")[0] == 404
    finally:
        server.shutdown()


def test_a_loss_is_kept_for_the_next_start_with_a_dead_letter_per_lost_input(tmp_path: Path) -> None:
    exits: list[int] = []
    kafka = KafkaSettings()
    inputs = [kafka.topics.raw]
    watch = BrokerWatch(
        "validator", kafka, inputs, StatsCounter("validator"), HealthSettings(state_dir=tmp_path), {}, exits.append
    )
    watch._committed = {(kafka.topics.raw, 0): 41, (kafka.topics.raw, 1): 7}
    watch._lost({kafka.topics.raw: "old-raw", kafka.topics.valid: "old-valid"}, {kafka.topics.raw: "new-raw"})
    assert exits == [EXIT_BROKER_STATE_LOST]
    assert watch.state.liveness() == (False, "exiting: the broker lost its state")
    letters = [
        deadletter_decoder.decode(text) for text in json.loads((tmp_path / f"validator.{PENDING_REPORT}").read_text())
    ]
    assert [(d.reason, d.source.topic) for d in letters] == [("broker_state_lost", kafka.topics.raw)]  # inputs only
    assert "old-raw -> new-raw" in letters[0].detail and "{0: 41, 1: 7}" in letters[0].detail


class FakeService:
    """A process that exits with `code` after `after_s` (as a service would), restartable."""

    def __init__(self, name: str, code: int, after_s: float) -> None:
        self.name, self.code, self.after_s = name, code, after_s
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> FakeService:
        self.starts += 1
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import time,sys; time.sleep({self.after_s}); sys.exit({self.code})"]
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.alive():
            self.process.terminate()
            self.process.wait(5)


def supervise(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.05)


def test_one_stuck_partition_is_named_while_the_others_move_on() -> None:
    watch = BrokerWatch("alerter", KafkaSettings(), [], StatsCounter("alerter"), HealthSettings(stall_s=60), {})
    waiting = {("valid", 0): 5, ("valid", 1): 8, ("valid", 2): 0}
    assert watch.stalled(waiting, {("valid", 0): 10, ("valid", 1): 3}, now=0.0) == []
    # Partition 0 moves on, partition 2 has nothing waiting; partition 1 keeps 8 records at the same offset.
    for now, offset in ((30.0, 12), (61.0, 15)):
        stuck = watch.stalled(waiting, {("valid", 0): offset, ("valid", 1): 3}, now)
    assert stuck == ["valid:1"]
    # It moves: ready again.
    assert watch.stalled(waiting, {("valid", 0): 16, ("valid", 1): 4}, now=62.0) == []


def test_after_a_loss_the_supervisor_waits_resets_once_and_restarts_everyone() -> None:
    resets: list[float] = []
    lost = FakeService("validator", EXIT_BROKER_STATE_LOST, 0.1).start()
    slow = FakeService("writer", 0, 60).start()  # never notices: stopped after the quiet time
    supervisor = Supervisor(cast(list[ServiceProcess], [lost, slow]), reset=lambda: resets.append(1), quiesce_s=0.5)
    lost.code = slow.code = 0
    supervise(supervisor, 1.5)
    assert len(resets) == 1
    assert (lost.starts, slow.starts) == (2, 2)
    assert {r.name for r in supervisor.restarts} == {"validator", "writer"}
    assert all(r.exit_code == EXIT_BROKER_STATE_LOST for r in supervisor.restarts)
    assert supervisor.failing() == []
    slow.stop()


def test_a_failing_service_is_restarted_with_a_growing_backoff_and_named_as_failing() -> None:
    crashing = FakeService("scorer", 1, 0.0).start()
    supervisor = Supervisor(cast(list[ServiceProcess], [crashing]), max_backoff_s=0.4)
    supervise(supervisor, 2.5)
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(supervisor.restarts, supervisor.restarts[1:], strict=False)]
    assert len(supervisor.restarts) >= 4
    assert min(gaps) >= 0.35  # at once the first time, then after the (capped) backoff: never a tight loop
    assert supervisor.failing(limit=3) == ["scorer"]


def records(name: str, message: str, count: int, **extra: Any) -> list[logging.LogRecord]:
    made = []
    for _ in range(count):
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, None)
        record.__dict__.update(extra)
        made.append(record)
    return made


def test_repeated_lines_are_held_back_and_counted() -> None:
    limit = RepeatLimit(burst=3, window_s=0.2)
    let = [r for r in records("linewatch.x", "commit failed at offset 12", 10) if limit.filter(r)]
    assert len(let) == 3
    time.sleep(0.25)
    later = records("linewatch.x", "commit failed at offset 99", 1)[0]
    assert limit.filter(later) and later.__dict__["repeats_held_back"] == 7
    # Same words, other fields (a model per line): not repeats.
    assert all(limit.filter(r) for m in "abcdef" for r in records("linewatch.x", "model trained", 1, model=m))


def test_libraries_share_a_budget_of_a_few_lines_a_second() -> None:
    limit = RepeatLimit()
    words = [f"connection {kind} failed" for kind in ("reset", "refused", "lost", "closed", "aborted", "timed out")]
    let = [r for w in words for r in records("aiokafka", w, 3) if limit.filter(r)]
    assert len(let) == 5  # 18 lines of 6 kinds in one burst
    ours = records("linewatch.core.health", "broker unreachable", 1)[0]
    assert limit.filter(ours)  # ours never wait for the libraries' budget


def test_kafka_pythons_warning_of_a_slow_loop_step_is_said_only_when_the_step_took_a_second() -> None:
    configure("simulator")
    selector = logging.getLogger("kafka.net.selector")
    step = (
        "Task <kafka.net.selector.Task object at 0x7f14> ran for {}s (>0.100s threshold). It is blocking the event loop"
    )
    short, long = (records("kafka.net.selector", step.format(s), 1)[0] for s in ("0.120", "2.500"))
    other = records("kafka.net.selector", "Task <Task> left RUNNING after step; demoting to UNSCHEDULED", 1)[0]
    assert not selector.filter(short)  # a thread that waited for its turn on shared cores
    assert selector.filter(long) and selector.filter(other)


def test_an_unreadable_report_is_kept_aside_and_does_not_stop_the_watch(tmp_path: Path) -> None:
    (tmp_path / f"writer.{PENDING_REPORT}").write_text("{half a report")
    watch = BrokerWatch("writer", KafkaSettings(), [], StatsCounter("writer"), HealthSettings(state_dir=tmp_path), {})
    watch._send_pending_report()  # returns without a broker: nothing to send
    assert not (tmp_path / f"writer.{PENDING_REPORT}").exists()
    assert (tmp_path / "writer.broker-loss-report.unreadable").read_text() == "{half a report"
