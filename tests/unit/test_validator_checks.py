"""The validator's checks, reason by reason, on frames the simulator makes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from linewatch.core.contract import TelemetryFrame, encoder, telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.malformed import KINDS, VALUE_KINDS, corrupt
from linewatch.services.simulator.runner import RunPlan, run
from linewatch.services.validator.checks import FrameValidator


@pytest.fixture(scope="module")
def frames(plant: PlantModel) -> list[TelemetryFrame]:
    payloads: list[bytes] = []
    run(
        plant,
        RunPlan(start_s=time.time() - 900, duration_s=20, frame_samples=10, speed=None),
        lambda _key, payload, _ts: payloads.append(payload),
    )
    return [telemetry_decoder.decode(p) for p in payloads]


@pytest.fixture(scope="module")
def checks(plant: PlantModel) -> FrameValidator:
    return FrameValidator(
        plant, max_message_bytes=256 * 1024, max_future=timedelta(minutes=5), max_past=timedelta(days=7)
    )


def test_valid_frames_pass_byte_identical(frames: list[TelemetryFrame], checks: FrameValidator) -> None:
    for frame in frames:
        payload = encoder.encode(frame)
        outcome = checks.validate(payload, datetime.now(UTC))
        assert outcome.rejections == []
        assert outcome.valid == payload
        assert outcome.valid_samples == len(frame.samples)


@pytest.mark.parametrize("kind", KINDS)
def test_each_malformed_kind_earns_its_reason_and_spares_good_samples(
    kind: str, frames: list[TelemetryFrame], checks: FrameValidator
) -> None:
    frame = frames[5]
    spoilt = corrupt(frame, np.random.default_rng(3), kind)
    outcome = checks.validate(spoilt.payload, datetime.now(UTC))
    assert [r.reason for r in outcome.rejections] == [kind]
    assert outcome.rejections[0].detail
    if spoilt.rejected_sample is None:
        assert outcome.valid is None
    else:
        assert outcome.valid is not None
        kept = telemetry_decoder.decode(outcome.valid)
        # The spoilt sample's other readings go on when only one value of it is spoilt.
        expected = [
            msgspec.structs.replace(s, values={k: v for k, v in s.values.items() if k not in spoilt.rejected_sensors})
            if i == spoilt.rejected_sample
            else s
            for i, s in enumerate(frame.samples)
        ]
        assert kept.samples == [s for s in expected if s.values]
        assert len(spoilt.rejected_sensors) == (1 if kind in VALUE_KINDS else len(frame.samples[0].values))
        rejected = outcome.rejections[0]
        assert rejected.samples == 1 and rejected.payload is not None
        [letter_sample] = json.loads(rejected.payload)["samples"]
        if kind in VALUE_KINDS:
            assert set(letter_sample["values"]) == spoilt.rejected_sensors


def test_equipment_claiming_the_wrong_line_is_rejected(frames: list[TelemetryFrame], checks: FrameValidator) -> None:
    wrong = msgspec.structs.replace(frames[0], line="cell-2")
    outcome = checks.validate(encoder.encode(wrong), datetime.now(UTC))
    assert [r.reason for r in outcome.rejections] == ["equipment_mismatch"]


def test_missing_unit_rejects_only_samples_using_it(frames: list[TelemetryFrame], checks: FrameValidator) -> None:
    frame = frames[0]
    dropped_sensor = next(iter(frame.units))
    units = {k: v for k, v in frame.units.items() if k != dropped_sensor}
    first = frame.samples[0]
    without = msgspec.structs.replace(first, values={k: v for k, v in first.values.items() if k != dropped_sensor})
    spoilt = msgspec.structs.replace(frame, units=units, samples=[without, *frame.samples[1:]])
    outcome = checks.validate(encoder.encode(spoilt), datetime.now(UTC))
    assert [r.reason for r in outcome.rejections] == ["missing_unit"]
    assert outcome.valid_samples == 1


def test_past_and_future_limits(frames: list[TelemetryFrame], checks: FrameValidator) -> None:
    frame = frames[0]
    last = frame.samples[-1].ts
    assert checks.validate(encoder.encode(frame), last + timedelta(days=6)).rejections == []
    too_late = checks.validate(encoder.encode(frame), last + timedelta(days=8))
    assert [r.reason for r in too_late.rejections] == ["timestamp_out_of_range"] and too_late.valid is None
    too_early = checks.validate(encoder.encode(frame), frame.samples[0].ts - timedelta(minutes=6))
    assert [r.reason for r in too_early.rejections] == ["timestamp_out_of_range"]


@pytest.mark.parametrize("payload", [b"", b"[]", b"null", b'{"schema_version": 1}', b"\xff\xfe", b"{" * 10000])
def test_garbage_never_raises(payload: bytes, checks: FrameValidator) -> None:
    outcome = checks.validate(payload, datetime.now(UTC))
    assert outcome.valid is None
    assert len(outcome.rejections) == 1
    assert outcome.rejections[0].reason in {"invalid_json", "schema_violation"}


def test_over_range_codes_and_non_finite_values_are_rejected_value_by_value_and_the_rest_go_on(
    frames: list[TelemetryFrame], checks: FrameValidator
) -> None:
    frame = frames[0]
    document = msgspec.to_builtins(frame)
    sensor, neighbour = list(document["units"])[:2]
    # A PLC's float maximum, an instrument's overload code, an integer at the limit, a NaN, and one just inside.
    spoilt = [3.4028235e38, -9.9e37, 10**30, float("nan"), -9.9e29]
    for sample, value in zip(document["samples"], spoilt, strict=False):
        sample["values"][sensor] = value
    document["samples"][0]["uncertain"] = [sensor, neighbour]
    outcome = checks.validate(json.dumps(document).encode(), datetime.now(UTC))
    by_reason = {r.reason: r for r in outcome.rejections}
    assert sorted(by_reason) == ["non_finite_value", "over_range_value"]
    assert by_reason["over_range_value"].samples == 3 and by_reason["non_finite_value"].samples == 1
    assert "over-range" in by_reason["over_range_value"].detail
    letters = json.loads(by_reason["over_range_value"].payload or b"")["samples"]
    assert [letter["values"] for letter in letters] == [{sensor: v} for v in spoilt[:3]]

    assert outcome.valid is not None
    kept = telemetry_decoder.decode(outcome.valid).samples
    assert len(kept) == len(frame.samples)  # every sample's other readings go on
    assert [sensor in s.values for s in kept] == [False] * 4 + [True] * (len(kept) - 4)
    assert kept[4].values[sensor] == -9.9e29
    assert all(k.values[neighbour] == s.values[neighbour] for k, s in zip(kept, frame.samples, strict=True))
    assert kept[0].uncertain == [neighbour]

    for sample in document["samples"]:
        sample["values"] = {sensor: 9.9e37}
    everything = checks.validate(json.dumps(document).encode(), datetime.now(UTC))
    assert everything.valid is None
    assert [(r.reason, r.samples) for r in everything.rejections] == [("over_range_value", len(document["samples"]))]
