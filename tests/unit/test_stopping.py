"""A stop that cannot finish (the broker gone) ends the process by its deadline, saying so; one that finishes in
time is not held by it."""

from __future__ import annotations

import subprocess
import sys
import time

from linewatch.core.stopping import STOP_OVERRUN_EXIT

STOPPING = """
import logging, sys, time
from linewatch.core import logs
from linewatch.core.stopping import exit_unless_stopped_within
logs.configure("writer", "INFO")
exit_unless_stopped_within(0.3)
time.sleep(float(sys.argv[1]))  # the stop's own work
"""


def stop_taking(seconds: float) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STOPPING, str(seconds)], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_stop_past_its_deadline_ends_the_process_with_one_line() -> None:
    code, output, took_s = stop_taking(20.0)
    assert code == STOP_OVERRUN_EXIT
    assert took_s < 10
    lines = [line for line in output.splitlines() if "stop did not finish in time" in line]
    assert len(lines) == 1 and '"stop_within_s": 0.3' in lines[0] and '"service": "writer"' in lines[0]


def test_a_stop_within_its_deadline_is_not_held_by_it() -> None:
    code, output, took_s = stop_taking(0.0)
    assert code == 0 and "stop did not finish" not in output
    assert took_s < 10
