"""The JSON Schemas in schemas/ and the msgspec models in linewatch.core.contract agree both ways."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import numpy as np
import pytest

from linewatch.core.contract import (
    AlarmAction,
    AlarmEvent,
    AnomalyScores,
    DeadLetter,
    LotEvent,
    Sample,
    SampleScore,
    SourcePosition,
    TelemetryFrame,
    dead_letter,
    encoder,
)
from linewatch.core.plant import PlantModel
from linewatch.core.settings import REPO_ROOT
from linewatch.services.simulator.runner import RunPlan, run

SCHEMAS = REPO_ROOT / "schemas"
PAIRS = [
    ("telemetry-frame.v1", TelemetryFrame),
    ("deadletter.v1", DeadLetter),
    ("anomaly-scores.v1", AnomalyScores),
    ("alarm-event.v1", AlarmEvent),
    ("alarm-action.v1", AlarmAction),
    ("lot-event.v1", LotEvent),
]


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name), format_checker=jsonschema.FormatChecker())


def model_accepts(model: type, document: Any) -> bool:
    try:
        msgspec.json.decode(json.dumps(document).encode(), type=model)
    except msgspec.ValidationError:
        return False
    return True


@pytest.mark.parametrize(("name", "model"), PAIRS)
def test_schema_is_valid_2020_12_and_fields_match_model(name: str, model: type) -> None:
    document = schema(name)
    jsonschema.Draft202012Validator.check_schema(document)
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    assert set(document["properties"]) == {f.encode_name for f in info.fields}
    assert set(document["required"]) == {f.encode_name for f in info.fields if f.required}
    assert document["additionalProperties"] is False and info.forbid_unknown_fields


@pytest.mark.parametrize(
    ("name", "definition", "model"),
    [("telemetry-frame.v1", "sample", Sample), ("anomaly-scores.v1", "sample", SampleScore)],
)
def test_nested_definitions_match_their_models(name: str, definition: str, model: type) -> None:
    document = schema(name)["$defs"][definition]
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    assert set(document["properties"]) == {f.encode_name for f in info.fields}
    assert set(document["required"]) == {f.encode_name for f in info.fields if f.required}


@pytest.mark.parametrize(("name", "model"), PAIRS)
def test_example_is_valid_in_both(name: str, model: type) -> None:
    example = json.loads((SCHEMAS / "examples" / f"{name}.json").read_text())
    validator(name).validate(example)
    assert model_accepts(model, example)


def test_every_simulator_frame_is_valid_in_the_schema(plant: PlantModel) -> None:
    frames: list[bytes] = []
    run(
        plant,
        # Right after a lot boundary (every 2 h): a run across one splits the frames there, and the count below.
        RunPlan(start_s=(time.time() // 7200 - 1) * 7200 + 60, duration_s=30, frame_samples=10, speed=None),
        lambda _key, payload, _ts: frames.append(payload),
    )
    check = validator("telemetry-frame.v1")
    assert len(frames) == len(plant.equipment) * 3
    for payload in frames:
        check.validate(json.loads(payload))


def test_dead_letter_from_code_is_valid_in_the_schema() -> None:
    letter = dead_letter(
        stage="validator",
        reason="invalid_json",
        detail="truncated",
        source=SourcePosition(topic="t", partition=1, offset=7, key="K"),
        source_bytes=b"\xff\xfe not utf-8",
    )
    assert letter.payload_encoding == "base64"
    validator("deadletter.v1").validate(json.loads(encoder.encode(letter)))


def _frame() -> dict[str, Any]:
    example: dict[str, Any] = json.loads((SCHEMAS / "examples" / "telemetry-frame.v1.json").read_text())
    return example


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    cases = []

    def case(label: str, change: Any) -> None:
        document = copy.deepcopy(_frame())
        change(document)
        cases.append((label, document))

    case("missing equipment_class", lambda d: d.pop("equipment_class"))
    case("unknown field", lambda d: d.update(extra=1))
    case("wrong schema_version", lambda d: d.update(schema_version=2))
    case("negative seq", lambda d: d.update(seq=-1))
    case("seq as text", lambda d: d.update(seq="12"))
    case("unknown state", lambda d: d.update(state="exploding"))
    case("empty samples", lambda d: d.update(samples=[]))
    case("empty values", lambda d: d["samples"][0].update(values={}))
    case("text value", lambda d: d["samples"][0]["values"].update(speed="fast"))
    case("over-range code", lambda d: d["samples"][0]["values"].update(speed=9.9e37))
    case("negative over-range code", lambda d: d["samples"][0]["values"].update(speed=-3.4028235e38))
    case("timestamp without offset", lambda d: d["samples"][0].update(ts="2026-11-22T08:00:00"))
    case("field in sample", lambda d: d["samples"][0].update(quality=1))
    case("name with space", lambda d: d.update(equipment_id="MILL 01"))
    case("name too long", lambda d: d.update(line="x" * 65))
    case("empty unit", lambda d: d["units"].update(speed=""))
    return cases


@pytest.mark.parametrize(("label", "document"), _mutations(), ids=[label for label, _ in _mutations()])
def test_invalid_frames_are_rejected_by_both(label: str, document: dict[str, Any]) -> None:
    assert not validator("telemetry-frame.v1").is_valid(document), label
    assert not model_accepts(TelemetryFrame, document), label


def test_optional_fields_default_to_none_in_both() -> None:
    document = _frame()
    del document["lot_id"], document["recipe"]
    validator("telemetry-frame.v1").validate(document)
    frame = msgspec.json.decode(json.dumps(document).encode(), type=TelemetryFrame)
    assert frame.lot_id is None and frame.recipe is None


# Schemas of files rather than messages, each with its own test (tests/unit/test_alarm_philosophy.py).
FILE_SCHEMAS = {"alarm-database.v1", "plant.v1"}


def test_schemas_folder_has_an_example_per_schema() -> None:
    names = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} - FILE_SCHEMAS
    examples = {p.stem for p in (SCHEMAS / "examples").glob("*.json")}
    assert names == examples == {name for name, _ in PAIRS}


def test_repo_root_is_right() -> None:
    assert (REPO_ROOT / "schemas").is_dir() and isinstance(REPO_ROOT, Path)


def test_alarm_and_lot_events_from_code_are_valid_in_the_schemas(plant: PlantModel) -> None:
    from linewatch.services.alerter.engine import AlarmEngine
    from linewatch.services.alerter.rationalization import load_alarm_database
    from linewatch.services.alerter.rules import load_rules
    from linewatch.services.alerter.state import UnitState
    from linewatch.simulation.faults import plan_injection
    from linewatch.simulation.plant_sim import lot_events, simulated

    start = 1_700_000_000 - 1_700_000_000 % 7200
    fault = plan_injection(plant, "moisture_ingress", "S1-DRY-01", start + 600, np.random.default_rng(1))
    engine, unit = AlarmEngine(plant, load_rules(), load_alarm_database()), UnitState()
    events = []
    for frame in simulated(plant, start, 0.6, seed=3, injections=[fault]):
        if frame.equipment_id == "S1-DRY-01":
            events += engine.on_frame(unit, frame)
    assert events, "the moisture ingress raised no alarm"
    for event in events:
        validator("alarm-event.v1").validate(json.loads(encoder.encode(event)))
    lots = lot_events(plant, start // 7200, start + 7200.0)
    assert {e.kind for e in lots} == {"electrolyte_lot_made", "cells_produced"}
    for lot in lots:
        validator("lot-event.v1").validate(json.loads(encoder.encode(lot)))


def test_a_copy_of_a_frame_is_known_and_other_frames_are_not(plant: PlantModel) -> None:
    from support import T0, frame

    from linewatch.core.contract import RECENT_FRAMES, frame_fingerprint, seen_before, telemetry_decoder

    first = frame(plant, "S1-DRY-01", T0, 10)
    copy_ = telemetry_decoder.decode(msgspec.json.encode(first))  # as it comes back from Kafka at a new offset
    assert frame_fingerprint(copy_) == frame_fingerprint(first) < 2**53
    later = frame(plant, "S1-DRY-01", T0 + 10, 10)
    other_sensors = msgspec.structs.replace(first, units={"h2s": "ppm"})  # same instants, another source's sensors
    other_unit = frame(plant, "S2-DRY-01", T0, 10)
    recent: list[int] = []
    assert not seen_before(recent, first)
    assert seen_before(recent, copy_)
    assert not any(seen_before(recent, f) for f in (later, other_sensors, other_unit))
    for n in range(RECENT_FRAMES):  # the memory is bounded: a copy from further back is not known
        seen_before(recent, frame(plant, "S1-DRY-01", T0 + 100 + n, 1))
    assert len(recent) == RECENT_FRAMES and not seen_before(recent, first)
