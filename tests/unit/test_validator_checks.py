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
from linewatch.services.simulator.malformed import KINDS, corrupt
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
        expected = [s for i, s in enumerate(frame.samples) if i != spoilt.rejected_sample]
        assert kept.samples == expected
        rejected = outcome.rejections[0]
        assert rejected.samples == 1 and rejected.payload is not None
        assert len(json.loads(rejected.payload)["samples"]) == 1


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
