"""The writer escapes every string it writes, whatever the upstream checks: frames put straight on the valid
topic (past the validator) with hostile strings in every field make exactly the points they describe, in the
telemetry measurement, and nothing else."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import start_services

from linewatch.core.kafka import RecordProducer
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import DevStack, wait_until

pytestmark = pytest.mark.reliability

HOSTILE = [
    'evil" x=1',
    "a,b=c d",
    "new\nline",
    "back\\slash",
    "telemetry,equipment=S1-DRY-01 dew_point=99",
    "x y",
    "=",
    ",",
    "ünïcødé",
    "tab\there",
]


def frame(index: int, text: str, ts_s: int) -> dict[str, object]:
    """Every string field hostile; sensor names too (the slow, escaping path) except in every other sample."""
    return {
        "schema_version": 1,
        "site": text,
        "area": text + "a",
        "line": text + "l",
        "equipment_id": f"{text}-{index}",
        "equipment_class": text + "c",
        "seq": index,
        "state": text,
        "units": {},
        "samples": [
            {"ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts_s))}Z", "values": {text: 1.5, "plain": 2.0}},
            {"ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts_s + 1))}Z", "values": {"plain": 3.0}},
        ],
        "lot_id": text,
        "recipe": text,
    }


def test_hostile_strings_on_the_valid_topic_make_exactly_their_own_points(
    stack: DevStack, kafka: KafkaSettings, log_dir: Path
) -> None:
    start = int(time.time()) - 3600
    producer = RecordProducer(kafka.bootstrap_servers)
    for index, text in enumerate(HOSTILE):
        producer.send(
            kafka.topics.valid, -1, text.encode(), json.dumps(frame(index, text, start + 10 * index)).encode()
        )
    producer.close()
    [writer] = start_services(stack, log_dir, "writer")
    try:

        def telemetry_points() -> int:
            result = stack.influxd.query('SELECT count("plain") FROM "telemetry"', stack.database)
            series = result["results"][0].get("series", [])  # type: ignore[index]
            return int(series[0]["values"][0][1]) if series else 0

        wait_until("the hostile frames written", lambda: telemetry_points() >= 2 * len(HOSTILE), 60, 0.5)
        time.sleep(2.0)  # anything extra has had time to land
        assert writer.alive()
    finally:
        writer.stop()
    assert telemetry_points() == 2 * len(HOSTILE)
    measurements = stack.influxd.query("SHOW MEASUREMENTS", stack.database)["results"][0]["series"][0]["values"]  # type: ignore[index]
    assert {m[0] for m in measurements} <= {"telemetry", "service_stats"}
    for index, hostile in enumerate(HOSTILE):
        # Line protocol has no way to carry a newline: it is stored as the two characters backslash and n.
        text = hostile.replace("\n", "\\n")
        equipment = f"{text}-{index}".replace("\\", "\\\\").replace("'", "\\'")
        result = stack.influxd.query(
            f'SELECT "plain", "state", "lot_id", "recipe" FROM "telemetry" WHERE "equipment" = \'{equipment}\'',
            stack.database,
        )
        [series] = result["results"][0]["series"]  # type: ignore[index]
        rows = series["values"]
        assert [row[1] for row in rows] == [2.0, 3.0], text
        assert all(row[2:] == [text, text, text] for row in rows), (text, rows)
        keys = stack.influxd.query('SHOW FIELD KEYS FROM "telemetry"', stack.database)["results"][0]["series"][0]  # type: ignore[index]
        assert text in {k[0] for k in keys["values"]}, text  # the hostile sensor name is one field, as it was
