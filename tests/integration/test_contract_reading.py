"""One reading of the contract: whatever the validator accepts, the writer, the scorer and the alerter accept
too, keyed by its equipment; whatever it refuses is dead letters with reasons, never an internal error.
10,000 generated and mutated frames (hypothesis): encodings and BOMs, timestamp spellings, huge and tiny numbers,
wrong keys, broken structure. In-process, no servers; a minute, so not in the unit tier."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linewatch.core.contract import telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import load_rules
from linewatch.services.alerter.state import UnitState
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.validator.agents import build_validator
from linewatch.services.validator.settings import ValidatorSettings
from linewatch.storage.lineprotocol import TimestampCache, telemetry_lines

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REASONS = {
    "invalid_json",
    "schema_violation",
    "oversized",
    "unknown_equipment",
    "equipment_mismatch",
    "unit_mismatch",
    "non_finite_value",
    "over_range_value",
    "unknown_sensor",
    "missing_unit",
    "timestamp_out_of_range",
}
SPELLINGS = [
    lambda t: t.isoformat().replace("+00:00", "Z"),
    lambda t: t.isoformat().replace("+00:00", "z"),
    lambda t: t.isoformat(),
    lambda t: t.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00",
    lambda t: (t + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00",
    lambda t: t.replace(tzinfo=None).isoformat(),  # no offset: refused by the contract
    lambda t: t.isoformat(timespec="microseconds").replace("+00:00", "Z"),
    lambda t: t.isoformat().replace("T", " ").replace("+00:00", "Z"),
    lambda t: "yesterday",
]
NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1.7976931348623157e308, 1e308, -1e308]),
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", '"12"', "true", "null", "1.5e-400"]),
)


def document(plant: PlantModel, unit: str, samples: int, when: datetime) -> dict[str, Any]:
    equipment = plant.equipment_by_id[unit]
    sensors = plant.classes[equipment.equipment_class].sensors
    return {
        "schema_version": 1,
        "site": equipment.site,
        "area": equipment.area,
        "line": equipment.line,
        "equipment_id": unit,
        "equipment_class": equipment.equipment_class,
        "seq": 7,
        "state": "running",
        "units": {name: s.unit for name, s in sensors.items()},
        "samples": [
            {"ts": (when + timedelta(seconds=i)).isoformat(), "values": {n: s.nominal for n, s in sensors.items()}}
            for i in range(samples)
        ],
        "lot_id": "EL-SYN1-1",
        "recipe": None,
    }


@st.composite
def mutated(draw: st.DrawFn, plant: PlantModel) -> tuple[bytes, bytes | None]:
    unit = draw(st.sampled_from([e.id for e in plant.equipment]))
    doc = document(plant, unit, draw(st.integers(1, 4)), NOW - timedelta(seconds=draw(st.integers(-400, 8 * 86400))))
    text_numbers: dict[str, str] = {}
    for sample in doc["samples"]:
        sample["ts"] = draw(st.sampled_from(SPELLINGS))(datetime.fromisoformat(sample["ts"]))
        for name in list(sample["values"]):
            if draw(st.integers(0, 9)) == 0:
                value = draw(NUMBERS)
                if isinstance(value, str):
                    marker = f"@@{len(text_numbers)}@@"
                    text_numbers[marker] = value
                    sample["values"][name] = marker
                else:
                    sample["values"][name] = value
    mutation = draw(
        st.sampled_from(["none"] * 8 + ["drop", "extra", "type", "sensor", "unit", "class", "state", "seq"])
    )
    if mutation == "drop":
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif mutation == "extra":
        doc["extra"] = 1
    elif mutation == "type":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(st.sampled_from([None, 1, "x", [], {}]))
    elif mutation == "sensor":
        doc["samples"][0]["values"][draw(st.sampled_from(["x y", "ünïcode", "a,b=c", "ok_name", ""]))] = 1.0
    elif mutation == "unit":
        doc["units"][next(iter(doc["units"]))] = draw(st.sampled_from(["", "°C", "degC", "x" * 40]))
    elif mutation == "class":
        doc["equipment_class"] = "stacker" if doc["equipment_class"] != "stacker" else "coater"
    elif mutation == "state":
        doc["state"] = draw(st.sampled_from(["Running", "idle", 'running", "x": "1']))
    elif mutation == "seq":
        doc["seq"] = draw(st.sampled_from([-1, 2**70, 1.5, "7"]))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    for marker, token in text_numbers.items():
        text = text.replace(f'"{marker}"', token)
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-32", "latin-1"]))
    payload = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 19)) == 0:
        payload = payload[: draw(st.integers(0, len(payload)))]  # cut short
    key = draw(st.sampled_from([unit.encode(), None, b"other", "ünit".encode()]))
    return payload, key


@pytest.fixture(scope="module")
def consumers(plant: PlantModel) -> tuple[Any, PlantScorer, AlarmEngine]:
    return (
        build_validator(ValidatorSettings(), plant),
        PlantScorer(plant),
        AlarmEngine(plant, load_rules(), load_alarm_database()),
    )


def test_whatever_the_validator_accepts_every_consumer_accepts(
    plant: PlantModel, consumers: tuple[Any, PlantScorer, AlarmEngine]
) -> None:
    validator, scorer, engine = consumers
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(mutated(plant))
    def check(message: tuple[bytes, bytes | None]) -> None:
        payload, _key = message
        outcome = validator.validate(payload, NOW)
        for rejection in outcome.rejections:
            assert rejection.reason in REASONS, rejection
        if outcome.valid is None:
            seen["refused"] += 1
            assert outcome.rejections, "refused without a dead letter"
            assert len(outcome.rejections) == 1 or all(r.samples for r in outcome.rejections)
            return
        seen["accepted"] += 1
        frame = telemetry_decoder.decode(outcome.valid)
        assert outcome.equipment_id == frame.equipment_id  # the key it goes out with
        assert outcome.valid.decode("utf-8") and not outcome.valid.startswith(b"\xef\xbb\xbf")
        assert all(s.ts.utcoffset() == timedelta(0) for s in frame.samples)
        assert all(math.isfinite(v) for s in frame.samples for v in s.values.values())
        assert len(telemetry_lines(outcome.valid, TimestampCache())) == len(frame.samples) == outcome.valid_samples
        scorer.prepare(frame)
        engine.on_frame(UnitState(), frame)

    check()
    assert seen["accepted"] > 1000 and seen["refused"] > 1000, seen
