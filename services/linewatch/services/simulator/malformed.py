"""Malformed messages on purpose, each with the validator reason it must earn and the readings it loses."""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgspec
import numpy as np

from linewatch.core.contract import TelemetryFrame, encoder

# Kinds that spoil one value or one sample keep the rest of the frame valid; the others spoil the whole frame.
VALUE_KINDS = {"non_finite_value", "over_range_value"}
SAMPLE_KINDS = VALUE_KINDS | {"unknown_sensor", "timestamp_out_of_range"}
FRAME_KINDS = ["invalid_json", "schema_violation", "unknown_equipment", "unit_mismatch", "oversized"]
KINDS = sorted(SAMPLE_KINDS) + FRAME_KINDS
OVERSIZE_BYTES = 300 * 1024


@dataclass(frozen=True)
class Corruption:
    kind: str
    payload: bytes
    rejected_sample: int | None  # index of the spoilt sample; None: the whole frame is rejected
    rejected_sensors: frozenset[str] = frozenset()  # the spoilt sample's readings that go with it


def corrupt(frame: TelemetryFrame, rng: np.random.Generator, kind: str | None = None) -> Corruption:
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    document = msgspec.to_builtins(frame)
    index = int(rng.integers(len(frame.samples)))
    sample = document["samples"][index]
    sensor, whole_sample = next(iter(sample["values"])), frozenset(sample["values"])
    if kind == "non_finite_value":
        sample["values"][sensor] = float("nan") if rng.random() < 0.5 else float("inf")
        return Corruption(kind, json.dumps(document).encode(), index, frozenset([sensor]))  # json writes NaN
    if kind == "over_range_value":
        sample["values"][sensor] = 9.9e37  # what many instruments send for "overload"
        return Corruption(kind, encoder.encode(document), index, frozenset([sensor]))
    if kind == "unknown_sensor":
        sample["values"]["bogus_sensor"] = 1.0
        return Corruption(kind, encoder.encode(document), index, whole_sample)
    if kind == "timestamp_out_of_range":
        sample["ts"] = "2099-01-01T00:00:00+00:00"
        return Corruption(kind, encoder.encode(document), index, whole_sample)
    if kind == "invalid_json":
        payload = encoder.encode(document)
        return Corruption(kind, payload[: len(payload) // 2], None)
    if kind == "schema_violation":
        del document["equipment_class"]
        return Corruption(kind, encoder.encode(document), None)
    if kind == "unknown_equipment":
        document["equipment_id"] = "GHOST-99"
        return Corruption(kind, encoder.encode(document), None)
    if kind == "unit_mismatch":
        sensor = next(iter(document["units"]))
        document["units"][sensor] = "furlong"
        return Corruption(kind, encoder.encode(document), None)
    document["padding"] = "x" * OVERSIZE_BYTES
    return Corruption("oversized", encoder.encode(document), None)
