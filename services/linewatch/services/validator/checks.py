"""Validation of one raw message, as data: the valid part, plus a rejection per reason for the rest.

Frame-level problems (unparseable, schema, unknown equipment, wrong unit, oversized) reject the whole
message; sample-level problems (non-finite value, unknown sensor, missing unit, timestamp out of range)
reject only the samples concerned, so good samples beside them go on.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from linewatch.core.contract import Sample, TelemetryFrame, encoder, telemetry_decoder
from linewatch.core.plant import PlantModel


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str
    payload: bytes | None = None  # None: the whole source message
    samples: int = 0


@dataclass
class Outcome:
    valid: bytes | None = None  # canonical: UTF-8 JSON as msgspec writes it, times in UTC
    valid_samples: int = 0
    equipment_id: str | None = None  # the Kafka key the valid frame goes out with
    rejections: list[Rejection] = field(default_factory=list)


class FrameValidator:
    def __init__(
        self, plant: PlantModel, *, max_message_bytes: int, max_future: timedelta, max_past: timedelta
    ) -> None:
        self._equipment = {e.id: e for e in plant.equipment}
        self._sensors = {name: set(cls.sensors) for name, cls in plant.classes.items()}
        self._units = {name: {s: spec.unit for s, spec in cls.sensors.items()} for name, cls in plant.classes.items()}
        self._max_bytes = max_message_bytes
        self._max_future = max_future
        self._max_past = max_past

    def validate(self, payload: bytes, now: datetime) -> Outcome:
        if len(payload) > self._max_bytes:
            return _reject("oversized", f"{len(payload)} bytes exceeds the limit of {self._max_bytes}")
        try:
            frame = telemetry_decoder.decode(payload)
            non_finite: list[Any] = []
        except UnicodeDecodeError as exc:  # msgspec's own error for bytes that are not UTF-8 (Latin-1, UTF-16)
            return _reject("invalid_json", f"not UTF-8: {exc}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if isinstance(exc, msgspec.ValidationError) and "out of range" not in str(exc):
                return _reject("schema_violation", str(exc))
            # msgspec refuses NaN/Infinity tokens and 1e999; the stdlib parser reads them, so those
            # samples can be told apart from the good ones.
            parsed = _split_non_finite(payload)
            if parsed is None:
                return _reject("invalid_json", str(exc))
            cleaned, non_finite = parsed
            if not cleaned.get("samples"):
                return _reject("non_finite_value", "every sample has a NaN or infinite value")
            try:
                frame = telemetry_decoder.decode(encoder.encode(cleaned))
            except msgspec.ValidationError as inner:
                return _reject("schema_violation", str(inner))
        return self._check_frame(frame, payload, non_finite, now)

    def _check_frame(self, frame: TelemetryFrame, payload: bytes, non_finite: list[Any], now: datetime) -> Outcome:
        equipment = self._equipment.get(frame.equipment_id)
        if equipment is None:
            return _reject("unknown_equipment", f"equipment {frame.equipment_id!r} is not in the plant model")
        if (frame.equipment_class, frame.area, frame.line, frame.site) != (
            equipment.equipment_class,
            equipment.area,
            equipment.line,
            equipment.site,
        ):
            return _reject(
                "equipment_mismatch",
                f"{frame.equipment_id} is {equipment.equipment_class} at "
                f"{equipment.site}/{equipment.area}/{equipment.line}, the frame says "
                f"{frame.equipment_class} at {frame.site}/{frame.area}/{frame.line}",
            )
        units = self._units[equipment.equipment_class]
        wrong = {s: u for s, u in frame.units.items() if s in units and units[s] != u}
        if wrong:
            detail = ", ".join(f"{s} in {u!r}, expected {units[s]!r}" for s, u in sorted(wrong.items()))
            return _reject("unit_mismatch", detail)

        known = self._sensors[equipment.equipment_class]
        with_unit = frame.units.keys()
        earliest, latest = now - self._max_past, now + self._max_future
        good: list[Sample] = []
        bad: dict[str, list[Sample]] = defaultdict(list)
        for sample in frame.samples:
            keys = sample.values.keys()
            if not earliest <= sample.ts <= latest:
                bad["timestamp_out_of_range"].append(sample)
            elif not keys <= known:
                bad["unknown_sensor"].append(sample)
            elif not keys <= with_unit:
                bad["missing_unit"].append(sample)
            else:
                good.append(sample)

        outcome = Outcome()
        if non_finite:
            body = dict(msgspec.to_builtins(frame), samples=non_finite)
            outcome.rejections.append(
                Rejection(
                    "non_finite_value",
                    f"{len(non_finite)} sample(s) with NaN or infinite values",
                    json.dumps(body).encode(),
                    len(non_finite),
                )
            )
        for reason, samples in bad.items():
            outcome.rejections.append(
                Rejection(
                    reason,
                    _describe(reason, samples, known, with_unit, earliest, latest),
                    encoder.encode(msgspec.structs.replace(frame, samples=samples)),
                    len(samples),
                )
            )
        if good:
            # What goes on is re-encoded, never the bytes that came in: one reading of the contract, so whatever
            # this accepted (a BOM-less UTF-8 document, times with offsets) every consumer reads the same way.
            if any(sample.ts.tzinfo is not UTC for sample in good):
                good = [Sample(ts=s.ts.astimezone(UTC), values=s.values) for s in good]
            outcome.valid_samples, outcome.equipment_id = len(good), frame.equipment_id
            outcome.valid = encoder.encode(msgspec.structs.replace(frame, samples=good))
        return outcome


def _reject(reason: str, detail: str) -> Outcome:
    return Outcome(rejections=[Rejection(reason, detail)])


def _split_non_finite(payload: bytes) -> tuple[dict[str, Any], list[Any]] | None:
    try:
        # UTF-8 only, as msgspec reads it: json.loads(bytes) would also take UTF-16, UTF-32 and a BOM.
        document = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("samples"), list):
        return document if isinstance(document, dict) else {"samples": []}, []
    good: list[Any] = []
    bad: list[Any] = []
    for sample in document["samples"]:
        values = sample.get("values") if isinstance(sample, dict) else None
        finite = not isinstance(values, dict) or all(
            not isinstance(v, float) or math.isfinite(v) for v in values.values()
        )
        (good if finite else bad).append(sample)
    return dict(document, samples=good), bad


def _describe(
    reason: str, samples: list[Sample], known: set[str], with_unit: Any, earliest: datetime, latest: datetime
) -> str:
    if reason == "timestamp_out_of_range":
        return (
            f"{len(samples)} sample(s) outside [{earliest.isoformat()}, {latest.isoformat()}], "
            f"first {samples[0].ts.isoformat()}"
        )
    if reason == "unknown_sensor":
        names = sorted({k for s in samples for k in s.values if k not in known})
        return f"sensor(s) {', '.join(names)} not defined for this equipment class"
    names = sorted({k for s in samples for k in s.values if k not in with_unit})
    return f"sensor(s) {', '.join(names)} have no unit in the frame"
