"""A person's mistake at the command line is one line saying what is wrong and what to do, a non-zero exit,
and no traceback; with a server missing it says so within 5 s. Each mistake runs the real `linewatch` command
(no servers are started: that is the point)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linewatch.core.services import SERVICES
from linewatch.tools.devstack import free_port

pytestmark = pytest.mark.operators


def linewatch(env: dict[str, str], *args: str) -> tuple[int, str, str, float]:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", *args],
        env=os.environ | {"COLUMNS": "200"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - began


def mistakes(tmp: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(what, arguments, settings, a word the error must contain)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    csv = tmp / "historian.csv"
    csv.write_text("Time,DEW_PT\n2026-11-01T10:00:00Z,-48.1\n2026-11-01T10:00:01Z,-48.2\n")
    keyed = {"LINEWATCH_MODEL_SIGNING_KEY": "k", "LINEWATCH_REGISTRY": str(tmp / "models")}
    return [
        ("alerter down", ["alarms", "list"], {"LINEWATCH_API_URL": nowhere, "LINEWATCH_OPERATOR_TOKEN": "t"}, "reach"),
        ("no operator token", ["alarms", "ack", "S1-DRY-01/h2s/exposure"], {"LINEWATCH_API_URL": nowhere}, "TOKEN"),
        ("missing file", ["train", "--csv", str(tmp / "nope.csv"), "--equipment", "S1-DRY-01"], keyed, "nope.csv"),
        ("missing recording", ["replay", str(tmp / "nope.lwrec.gz")], {}, "nope.lwrec.gz"),
        ("unknown equipment", ["train", "--csv", str(csv), "--equipment", "S9-XX-99"], keyed, "S9-XX-99"),
        (
            "unknown column",
            ["train", "--csv", str(csv), "--equipment", "S1-DRY-01", "--map", "DEW_PTT=dew_point"],
            keyed,
            "its columns are",
        ),
        (
            "unknown sensor",
            [
                "import",
                "csv",
                "--csv",
                str(csv),
                "--equipment",
                "S1-DRY-01",
                "--map",
                "DEW_PT=dew",
                "-o",
                str(tmp / "r.lwrec.gz"),
            ],
            {},
            "its sensors are",
        ),
        ("unknown fault", ["drill", "--fault", "mill_overheat"], {}, "mill_overheating"),
        ("fault on the wrong unit", ["simulate", "--fault", "mill_overheating@S1-DRY-01"], {}, "planetary_mill"),
        ("bad time", ["alarms", "kpi", "--start", "yesterday"], {}, "ISO 8601"),
        ("unknown stage", ["bench", "stages", "--stage", "writer"], {}, "validator, alerter, scorer"),
        ("no load", ["bench", "latency", "--load", "0"], {}, "--load-share"),
        ("no partitions", ["bench", "broker", "--partitions", "0"], {}, "--partitions of 1 or more"),
        ("no turns", ["bench", "stages", "--repeat", "0"], {}, "1 or more turns"),
        ("no draws", ["bench", "detection", "--seeds", "0"], {}, "1 or more draws"),
        ("too few records to time", ["bench", "stages", "--records", "2000"], {}, "5,000 or more"),
        ("InfluxDB down", ["lots", "affected", "--lot", "EL-1"], {"LINEWATCH_INFLUX__URL": nowhere}, "reach"),
        ("no model", ["evaluate", "--csv", str(csv), "--equipment", "S1-DRY-01"], keyed, "train"),
        ("bad plant file", ["train"], keyed | {"LINEWATCH_PLANT_FILE": str(csv)}, "historian.csv"),
        ("bad setting", ["models"], keyed | {"LINEWATCH_RELOAD_INTERVAL_S": "soon"}, "LINEWATCH_RELOAD_INTERVAL_S"),
    ]


def test_each_mistake_is_one_line_a_nonzero_exit_and_no_traceback(tmp_path: Path) -> None:
    for what, args, env, word in mistakes(tmp_path):
        status, stdout, stderr, took = linewatch(env, *args)
        assert status != 0, (what, stdout, stderr)
        assert "Traceback" not in stderr + stdout, (what, stderr[-1500:])
        lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("usage:")]
        assert len(lines) == 1 and lines[0].startswith("linewatch"), (what, stderr)
        assert word in lines[0], (what, lines[0])
        assert took < 15, (what, took)  # Python and the command tree start in a few seconds; no 30 s waits


def test_help_names_the_command_people_type() -> None:
    for args in (["--help"], ["train", "--help"], ["alarms", "ack", "--help"], ["bench", "--help"]):
        status, stdout, _, _ = linewatch({}, *args)
        assert status == 0 and stdout.startswith("usage: linewatch"), stdout[:200]
    _, stdout, _, _ = linewatch({}, "alarms", "kpi", "--help")
    assert "ISO 8601" in stdout and "01.11.2026" in stdout


def test_a_service_started_with_a_mistyped_setting_says_which_in_one_line() -> None:
    """As compose and the launcher start them (`python -m linewatch.services.NAME`), before any server is asked."""
    for service in SERVICES:
        result = subprocess.run(
            [sys.executable, "-m", f"linewatch.services.{service.name}"],
            env=os.environ | {"LINEWATCH_KAFKA__PARTITIONS": "twelve"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (service.name, result.stderr[-1500:])
        assert len(lines) == 1 and "Traceback" not in result.stderr, (service.name, result.stderr[-1500:])
        assert lines[0].startswith(("linewatch service", "linewatch simulate")), lines[0]
        assert "LINEWATCH_KAFKA__PARTITIONS" in lines[0], lines[0]
