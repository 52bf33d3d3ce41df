"""The README's first command: `linewatch up` brings up the whole pipeline, shows it, and stops cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys


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
