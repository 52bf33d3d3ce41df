"""`linewatch drill --days` end to end through the CLI (training, simulation with an injected fault, the
scorer's and alerter's engines in worker processes): the fault is alarmed with its rationalization, the
corrective action is in the event and in the notification text, and the KPI report closes the run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.alarms, pytest.mark.slow]
DRILL = ["--days", "0.04", "--train-hours", "1", "--fault", "h2s_rise@S1-DRY-01+1200"]


def test_a_short_drill_alarms_the_fault_and_says_what_to_do() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", "drill", *DRILL],
        capture_output=True,
        text=True,
        timeout=900,
    )
    said = result.stdout
    assert result.returncode == 0, said[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "faults alarmed: 1/1" in said
    first = re.search(r"fault h2s_rise on S1-DRY-01/h2s: (\w+) alarm after (\d+) s: (\S+) \(([\w.-]+)\)", said)
    assert first is not None, said
    assert first.group(4) != "not", "the first alarm is rationalized"
    action = re.search(r"corrective action in the event: (.+)", said)
    assert action is not None and action.group(1) != "-"
    notification = re.search(r"notification to ([^:]+): (.+)", said)
    assert notification is not None and f"Action: {action.group(1)}" in notification.group(2)
    kpis = re.search(r"drill_days=0.04 alarms=(\d+) worst_area_per_10_min=([\d.]+) floods=(\d+)", said)
    assert kpis is not None and int(kpis.group(1)) >= 1
