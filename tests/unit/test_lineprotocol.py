from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta, timezone

import msgspec

from linewatch.core.contract import AnomalyScores, SampleScore, TelemetryFrame, encoder, telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.runner import RunPlan, run
from linewatch.storage.lineprotocol import (
    TimestampCache,
    equipment_tags,
    escape_key,
    line,
    score_lines,
    telemetry_lines,
    to_ns,
)


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
        # Right after a lot boundary (every 2 h): a run across one splits the frames there (8 samples instead of 10
        # failed this test at 07:59:57).
        RunPlan(start_s=(time.time() // 7200 - 1) * 7200 + 60, duration_s=20, frame_samples=10, speed=None),
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


SCORES_START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def scores_record(unit: str, role: str, seconds: list[int]) -> AnomalyScores:
    """A unit's scores at these seconds after SCORES_START, with the values a formatter can get wrong: names to
    escape, a missing sensor, an anomalous sample, a negative zero."""
    samples = [
        SampleScore(
            ts=SCORES_START + timedelta(seconds=i),
            score=0.25 * i,
            anomalous=i == 2,
            t2=1e-7,
            spe=12345.678,
            iforest=0.5,
            univariate=3.0,
            missing=["dew point"] if i == 1 else [],
            flatline=[],
            top_sensors=["dew point", 'p"x', "h2s,ppm"],
            drift=-0.0,
        )
        for i in seconds
    ]
    return AnomalyScores(
        site="plant-01",
        area="dry-rooms",
        line="L.1",
        equipment_id=unit,
        equipment_class="dry_room",
        schema_version=1,
        model_version="v1.b",
        role=role,  # type: ignore[arg-type]
        samples=samples,
    )


def test_score_lines_match_the_generic_formatter() -> None:
    """The scores' fast path (series and keys escaped once a record) writes what the generic formatter does."""
    scores = scores_record("S2-DRY-01", "shadow", [0, 1, 2])
    expected = [
        line(
            "anomaly",
            equipment_tags(scores) | {"role": "shadow"},
            {
                "score": s.score,
                "t2": s.t2,
                "spe": s.spe,
                "drift": s.drift,
                "iforest": s.iforest,
                "univariate": s.univariate,
                "anomalous": s.anomalous,
                "top_sensors": ",".join(s.top_sensors),
                "missing": ",".join(s.missing),
                "flatline": ",".join(s.flatline),
                "model_version": "v1.b",
            },
            to_ns(s.ts),
        ).encode()
        for s in scores.samples
    ]
    assert score_lines(encoder.encode(scores)) == expected


def test_latency_bench_reads_each_units_newest_active_score_from_the_written_lines() -> None:
    """`bench latency` times a frame by the write that stored its unit's score: it must read what the writer
    writes (active scores only, by unit) and take every frame up to a unit's newest score."""
    from linewatch.tools.latencybench import score_latencies, stored_scores

    def written(unit: str, role: str, seconds: list[int]) -> bytes:
        return b"\n".join(score_lines(encoder.encode(scores_record(unit, role, seconds))))

    t0 = SCORES_START.timestamp()
    writes = stored_scores(
        [
            (t0 + 5.0, written("SEAL-01", "active", [1, 2]) + b"\n" + written("SEAL-02", "shadow", [1, 2])),
            (t0 + 9.0, b"telemetry,equipment=SEAL-01 x=1 1"),  # no score: not a write of scores
            (t0 + 9.5, written("SEAL-02", "active", [3])),
        ]
    )
    assert writes == [(t0 + 5.0, {"SEAL-01": [t0 + 1, t0 + 2]}), (t0 + 9.5, {"SEAL-02": [t0 + 3]})]
    pending = {"SEAL-01": [t0 + 2, t0 + 4], "SEAL-02": [t0 + 2, t0 + 3]}
    latencies = score_latencies(writes, pending)
    assert latencies == [("SEAL-01", t0 + 2, 3.0), ("SEAL-02", t0 + 2, 7.5), ("SEAL-02", t0 + 3, 6.5)]
    assert pending == {"SEAL-01": [t0 + 4], "SEAL-02": []}, "a frame after the newest score still waits"
