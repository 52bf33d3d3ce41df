"""Validation of one raw message, as data: the valid part, plus a rejection per reason for the rest.

Frame-level problems (unparseable, schema, unknown equipment, wrong unit, oversized) reject the whole
message; sample-level problems (unknown sensor, missing unit, timestamp out of range) reject only the samples
concerned, and a non-finite or over-range value only itself, so good readings beside them go on.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from linewatch.core.contract import READING_LIMIT, Sample, TelemetryFrame, encoder, reading, telemetry_decoder
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
            unreadable: dict[str, list[Any]] = {}
        except UnicodeDecodeError as exc:  # msgspec's own error for bytes that are not UTF-8 (Latin-1, UTF-16)
            return _reject("invalid_json", f"not UTF-8: {exc}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if isinstance(exc, msgspec.ValidationError) and not str(exc).startswith(_NUMBER_ERRORS):
                return _reject("schema_violation", str(exc))
            # msgspec refuses NaN/Infinity tokens, 1e999 and over-range codes; the stdlib parser reads them, so
            # those values can be told apart from the good ones.
            parsed = _split_unreadable(payload)
            if parsed is None:
                return _reject("invalid_json", str(exc))
            cleaned, unreadable = parsed
            if not cleaned.get("samples"):
                return Outcome(rejections=_unreadable_rejections(cleaned, unreadable))
            try:
                frame = telemetry_decoder.decode(encoder.encode(cleaned))
            except msgspec.ValidationError as inner:
                return _reject("schema_violation", str(inner))
        return self._check_frame(frame, unreadable, now)

    def _check_frame(self, frame: TelemetryFrame, unreadable: dict[str, list[Any]], now: datetime) -> Outcome:
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
        if unreadable:
            outcome.rejections = _unreadable_rejections(msgspec.to_builtins(frame), unreadable)
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


# msgspec's words for a number it will not read as a reading: 1e999, or beyond the contract's READING_LIMIT.
_NUMBER_ERRORS = ("Number out of range", "Expected `float` <", "Expected `float` >")
_UNREADABLE = {
    "non_finite_value": "NaN or infinite",
    "over_range_value": f"beyond ±{READING_LIMIT:g}: an instrument's over-range or fault code, not a reading",
}


def _reject(reason: str, detail: str) -> Outcome:
    return Outcome(rejections=[Rejection(reason, detail)])


def _split_unreadable(payload: bytes) -> tuple[dict[str, Any], dict[str, list[Any]]] | None:
    try:
        # UTF-8 only, as msgspec reads it: json.loads(bytes) would also take UTF-16, UTF-32 and a BOM.
        document = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("samples"), list):
        return document if isinstance(document, dict) else {"samples": []}, {}
    good: list[Any] = []
    bad: dict[str, list[Any]] = defaultdict(list)
    for sample in document["samples"]:
        values = sample.get("values") if isinstance(sample, dict) else None
        if not isinstance(values, dict):
            good.append(sample)  # the schema check names what is wrong with it
            continue
        # Value by value: a sensor stuck at its overload code must not take its neighbours' readings with it.
        kept: dict[str, Any] = {}
        spoilt: dict[str, dict[str, Any]] = defaultdict(dict)
        for name, value in values.items():
            reason = _unreadable(value)
            (kept if reason is None else spoilt[reason])[name] = value
        for reason, unread in spoilt.items():
            bad[reason].append(dict(sample, values=unread))
        if kept:
            uncertain = sample.get("uncertain")
            if isinstance(uncertain, list):
                sample = dict(sample, uncertain=[n for n in uncertain if n in kept])
            good.append(dict(sample, values=kept))
    return dict(document, samples=good), bad


def _unreadable(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None  # not a number: the schema check names it
    if isinstance(value, float) and not math.isfinite(value):
        return "non_finite_value"
    return "over_range_value" if _beyond_limit(value) else None


def _beyond_limit(value: float) -> bool:
    try:
        return reading(float(value)) is None  # an integer as msgspec reads it: the nearest float
    except OverflowError:  # an integer past any float
        return True


def _unreadable_rejections(header: dict[str, Any], unreadable: dict[str, list[Any]]) -> list[Rejection]:
    return [
        Rejection(
            reason,
            f"{sum(len(s['values']) for s in samples)} value(s) in {len(samples)} sample(s) {_UNREADABLE[reason]}",
            json.dumps(dict(header, samples=samples)).encode(),
            len(samples),
        )
        for reason, samples in unreadable.items()
    ]


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
