"""The README's first command: `linewatch up` brings up the whole pipeline, shows it, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_up_runs_the_whole_pipeline_and_stops_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", "up", "--for-s", "40", "--train-hours", "2", "--speed", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    screen = result.stdout

    def total(label: str) -> int:
        match = re.search(re.escape(label) + r"\s*│\s*([\d,]+)", screen)
        assert match, f"{label!r} not shown:\n{screen[-3000:]}"
        return int(match.group(1).replace(",", ""))

    assert total("simulator: samples sent") > 10_000
    assert total("validator: valid samples") > 10_000
    assert total("scorer: samples scored") > 5_000
    assert total("alerter: records evaluated") > 100
    assert total("writer: points in InfluxDB (readings, scores, alarms)") > 15_000
    assert "latest alarms" in screen and "linewatch alarms list" in screen
    assert "stopped; logs kept in" in screen


def children(parent: int) -> set[int]:
    """PIDs of the processes `parent` started (services, the Tansu broker and influxd for `linewatch up`)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.mark.operators
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_up_stops_everything_on_sigterm_and_sighup(stop: signal.Signals) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "linewatch.tools.cli", "up", "--train-hours", "0.5", "--speed", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"COLUMNS": "160"},
    )
    deadline = time.monotonic() + 180
    while len(started := children(up.pid)) < 7:  # broker, influxd, four services and the simulator
        assert up.poll() is None and time.monotonic() < deadline, "linewatch up did not start"
        time.sleep(0.5)
    time.sleep(3)
    up.send_signal(stop)
    out, _ = up.communicate(timeout=60)
    assert up.returncode == 0 and b"stopped; logs kept in" in out
    assert alive(started) == set()
