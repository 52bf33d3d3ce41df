from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta, timezone

import msgspec

from linewatch.core.contract import TelemetryFrame, encoder, telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.runner import RunPlan, run
from linewatch.storage.lineprotocol import TimestampCache, escape_key, line, telemetry_lines, to_ns


def parse(text: bytes) -> tuple[str, dict[str, str], dict[str, str], int]:
    """Minimal parser for unescaped lines: measurement, tags, fields (raw text), timestamp."""
    head, fields, ts = text.decode().rsplit(" ", 2)
    measurement, *tags = head.split(",")
    return (measurement, dict(t.split("=", 1) for t in tags), dict(f.split("=", 1) for f in fields.split(",")), int(ts))


def reference(frame: TelemetryFrame) -> list[bytes]:
    """The same points through the generic, fully escaping formatter."""
    tags = {
        "site": frame.site,
        "area": frame.area,
        "line": frame.line,
        "equipment": frame.equipment_id,
        "equipment_class": frame.equipment_class,
    }
    context = {"state": frame.state, "lot_id": frame.lot_id, "recipe": frame.recipe}
    return [
        line("telemetry", tags, {**s.values, **{k: v for k, v in context.items() if v}}, to_ns(s.ts)).encode()
        for s in frame.samples
    ]


def test_fast_path_matches_the_generic_formatter(plant: PlantModel) -> None:
    payloads: list[bytes] = []
    run(
        plant,
        RunPlan(start_s=time.time() - 900, duration_s=20, frame_samples=10, speed=None),
        lambda _key, payload, _ts: payloads.append(payload),
    )
    cache = TimestampCache()
    for payload in payloads:
        fast = [parse(x) for x in telemetry_lines(payload, cache)]
        slow = [parse(x) for x in reference(telemetry_decoder.decode(payload))]
        assert len(fast) == len(slow) == 10
        for (m1, t1, f1, ts1), (m2, t2, f2, ts2) in zip(fast, slow, strict=True):
            assert (m1, t1, ts1) == (m2, t2, ts2)
            assert f1.keys() == f2.keys()
            for key in f1:
                assert f1[key] == f2[key] if f1[key].startswith('"') else float(f1[key]) == float(f2[key])


def test_whitespace_and_escaped_names_in_json_still_give_exact_lines(plant: PlantModel) -> None:
    document = {
        "schema_version": 1,
        "site": "plant-01",
        "area": "electrolyte",
        "line": "syn-1",
        "equipment_id": "S1-MILL-01",
        "equipment_class": "planetary_mill",
        "seq": 1,
        "state": "running",
        "units": {"speed": "rpm"},
        "samples": [{"ts": "2026-11-22T08:00:00+01:00", "values": {"sp\\u0065ed": 400, "jar_temp": 1e-05}}],
    }
    pretty = msgspec.json.format(encoder.encode(document), indent=2).replace(b'"sp\\\\u0065ed"', b'"sp\\u0065ed"')
    [point] = telemetry_lines(pretty, TimestampCache())
    _, _, fields, ts = parse(point)
    assert fields == {"speed": "400.0", "jar_temp": "1e-05", "state": '"running"'}
    assert ts == to_ns(datetime(2026, 11, 22, 7, 0, tzinfo=UTC))


def test_to_ns_is_exact_and_timezone_aware() -> None:
    moment = datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert to_ns(moment) == calendar.timegm((2026, 11, 22, 6, 0, 0)) * 10**9 + 123_456_000
    assert TimestampCache()("2026-11-22T06:00:00.123456Z") == str(to_ns(moment)).encode()


def test_escaping() -> None:
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert line("m", {"t": "x y"}, {"s": 'say "hi"', "i": 3, "b": True}, 5) == r'm,t=x\ y s="say \"hi\"",i=3i,b=true 5'
