"""From single values to the contract: which plant sensor an address is, and values gathered into telemetry frames
per equipment (samples by source timestamp, many samples a frame)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from linewatch.core.contract import (
    TELEMETRY_SCHEMA_VERSION,
    Sample,
    SourcePosition,
    TelemetryFrame,
    dead_letter,
    encoder,
    equipment_fields,
)
from linewatch.core.plant import Equipment, PlantModel, Protocol


@dataclass(frozen=True)
class Point:
    """One plant sensor as the gateway reads it."""

    equipment: Equipment
    sensor: str
    address: str
    period_s: float
    deadband: float


def bindings(plant: PlantModel, protocol: Protocol) -> dict[str, Point]:
    """Address -> sensor for every sensor the plant file gives an address over `protocol`."""
    found: dict[str, Point] = {}
    for equipment in plant.equipment:
        for sensor, spec in plant.classes[equipment.equipment_class].sensors.items():
            address = plant.address(equipment, sensor, protocol)
            if address is None:
                continue
            if address in found:
                other = found[address]
                raise ValueError(
                    f"{protocol} address {address!r} is both {other.equipment.id}.{other.sensor} and "
                    f"{equipment.id}.{sensor}: give each sensor its own"
                )
            found[address] = Point(
                equipment, sensor, address, plant.period_s(equipment.equipment_class, sensor), spec.deadband
            )
    return found


@dataclass
class OutFrame:
    equipment_id: str
    payload: bytes
    values: int
    last_ts: datetime


class Assembler:
    """Gathers values from every source (MQTT and OPC UA, both on the gateway's one event loop, so no lock) into
    samples per equipment and source timestamp. A sample is held `hold_s` after its first value arrived, so values
    of one instant that come in separate notifications travel together; a value that comes later still goes out,
    as another sample with the same timestamp (InfluxDB merges the two)."""

    def __init__(self, plant: PlantModel, frame_max_samples: int) -> None:
        self._units = {
            name: {sensor: spec.unit for sensor, spec in cls.sensors.items()} for name, cls in plant.classes.items()
        }
        self._equipment = plant.equipment_by_id
        self._max = frame_max_samples
        # equipment -> ts -> (first arrival, values, uncertain sensors)
        self._open: dict[str, dict[datetime, tuple[float, dict[str, float], set[str]]]] = defaultdict(dict)
        self._letters: list[tuple[bytes, bytes]] = []  # (key, dead letter) from any source

    def reject(self, source: str, reason: str, detail: str, payload: bytes, key: str | None = None) -> None:
        """Input a source could not use, as a dead letter (`source`: where it came from, e.g. `mqtt:TOPIC` or
        `opcua:NODE`); it goes out with the next frames, through the same buffer."""
        letter = dead_letter(
            stage="gateway",
            reason=reason,
            detail=detail,
            source=SourcePosition(topic=source, partition=-1, offset=-1, key=key),
            source_bytes=payload,
        )
        self._letters.append(((key or source).encode(), encoder.encode(letter)))

    def take_letters(self) -> list[tuple[bytes, bytes]]:
        letters, self._letters = self._letters, []
        return letters

    def add(self, equipment_id: str, ts: datetime, values: dict[str, float], uncertain: set[str] | None = None) -> None:
        """Takes `values` as it is (no copy: the hot path builds a new dict for each sample)."""
        samples = self._open[equipment_id]
        held = samples.get(ts)
        if held is None:
            samples[ts] = (time.monotonic(), values, set(uncertain) if uncertain else set())
        else:
            held[1].update(values)
            if uncertain:
                held[2].update(uncertain)
            else:
                held[2].difference_update(values)

    def drain(self, cutoff: float) -> list[OutFrame]:
        """The frames of every sample whose first value arrived by `cutoff` (time.monotonic()), oldest first."""
        ready: dict[str, list[tuple[datetime, dict[str, float], set[str]]]] = {}
        for equipment_id, held in self._open.items():
            due = [ts for ts, (arrived, _, _) in held.items() if arrived <= cutoff]
            if due:
                ready[equipment_id] = [(ts, *held.pop(ts)[1:]) for ts in due]
        frames = []
        seq = time.time_ns() // 1000  # grows across restarts without a stored counter
        for equipment_id, samples in ready.items():
            samples.sort(key=lambda item: item[0])
            equipment = self._equipment[equipment_id]
            units = self._units[equipment.equipment_class]
            for start in range(0, len(samples), self._max):
                chunk = samples[start : start + self._max]
                present = {sensor for _, values, _ in chunk for sensor in values}
                frame = TelemetryFrame(
                    schema_version=TELEMETRY_SCHEMA_VERSION,
                    seq=seq,
                    state="running",
                    units={sensor: units[sensor] for sensor in sorted(present)},
                    samples=[
                        Sample(ts=ts, values=values, uncertain=sorted(uncertain)) for ts, values, uncertain in chunk
                    ],
                    **equipment_fields(equipment.ref),
                )
                seq += 1
                frames.append(
                    OutFrame(equipment_id, encoder.encode(frame), sum(len(v) for _, v, _ in chunk), chunk[-1][0])
                )
        return frames


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
