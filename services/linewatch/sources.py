"""Telemetry frames from outside Kafka: a frames file, InfluxDB, or any historian's CSV. Shared by training
(scorer) and by recording imports (linewatch import)."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from linewatch.contract import (
    FRAME_SAMPLES,
    TELEMETRY_SCHEMA_VERSION,
    Sample,
    TelemetryFrame,
    equipment_fields,
    telemetry_decoder,
)
from linewatch.influx import influxql
from linewatch.plant import PlantModel
from linewatch.settings import InfluxSettings


def frames_file(path: Path) -> Iterator[TelemetryFrame]:
    """JSON lines of telemetry frames, optionally gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield telemetry_decoder.decode(line)


def influx(url: str, database: str, start: datetime, end: datetime, plant: PlantModel) -> Iterator[TelemetryFrame]:
    """Telemetry points back from InfluxDB (InfluxQL: 1.x, or 2.x through its v1 API), as frames."""
    for equipment in plant.equipment:
        # Equipment ids come from the plant model and times from datetime: no user text reaches the query.
        query = (
            f"SELECT * FROM telemetry WHERE equipment = '{equipment.id}' AND time >= '{start.isoformat()}' "
            f"AND time < '{end.isoformat()}' ORDER BY time"
        )
        for series in influxql(InfluxSettings(url=url, database=database), query, epoch="ns"):
            yield from _frames_from_rows(plant, equipment.id, series["columns"], series["values"])


def _frames_from_rows(
    plant: PlantModel, equipment_id: str, columns: list[str], rows: list[list[object]]
) -> Iterator[TelemetryFrame]:
    equipment = plant.equipment_by_id[equipment_id]
    sensors = plant.classes[equipment.equipment_class].sensors
    index = {name: columns.index(name) for name in sensors if name in columns}
    state_at = columns.index("state") if "state" in columns else None
    lot_at = columns.index("lot_id") if "lot_id" in columns else None
    chunk: list[tuple[str, str | None, Sample]] = []

    def flush() -> Iterator[TelemetryFrame]:
        if chunk:
            yield TelemetryFrame(
                **equipment_fields(equipment.ref),
                schema_version=TELEMETRY_SCHEMA_VERSION,
                seq=0,
                state=chunk[0][0],  # type: ignore[arg-type]
                units={n: sensors[n].unit for n in index},
                samples=[c[2] for c in chunk],
                lot_id=chunk[0][1],
            )
            chunk.clear()

    for row in rows:
        values = {n: float(row[i]) for n, i in index.items() if row[i] is not None}  # type: ignore[arg-type]
        if not values:
            continue
        ts = datetime.fromtimestamp(int(row[0]) / 1e9, UTC)  # type: ignore[call-overload]
        state = str(row[state_at]) if state_at is not None and row[state_at] else "running"
        lot = str(row[lot_at]) if lot_at is not None and row[lot_at] else None
        if chunk and (len(chunk) >= FRAME_SAMPLES or chunk[0][0] != state or chunk[0][1] != lot):
            yield from flush()
        chunk.append((state, lot, Sample(ts=ts, values=values)))
    yield from flush()


@dataclass(frozen=True)
class CsvMapping:
    """How a CSV from another historian maps to one equipment unit of the plant model."""

    equipment_id: str
    timestamp_column: str
    columns: dict[str, str]  # CSV column -> sensor
    label_column: str | None = None


def csv_rows(
    path: Path, mapping: CsvMapping, plant: PlantModel
) -> tuple[list[TelemetryFrame], list[tuple[float, bool]]]:
    """Frames for the mapped unit, and the label column (truthy = fault) per timestamp if there is one."""
    equipment = plant.equipment_by_id[mapping.equipment_id]
    known = plant.classes[equipment.equipment_class].sensors
    unknown = set(mapping.columns.values()) - set(known)
    if unknown:
        raise ValueError(f"{mapping.equipment_id} ({equipment.equipment_class}) has no sensor(s) {sorted(unknown)}")
    columns = ["time", *mapping.columns.values(), "state"]
    rows: list[list[object]] = []
    labels: list[tuple[float, bool]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            ts = _parse_time(record[mapping.timestamp_column])
            values = [_number(record.get(column)) for column in mapping.columns]
            rows.append([int(ts.timestamp() * 1e9), *values, "running"])
            if mapping.label_column:
                label = (record.get(mapping.label_column) or "").strip()
                labels.append((ts.timestamp(), label not in ("", "0", "false", "False", "normal")))
    rows.sort(key=lambda r: int(r[0]))  # type: ignore[call-overload]
    return list(_frames_from_rows(plant, mapping.equipment_id, columns, rows)), sorted(labels)


def _parse_time(text: str) -> datetime:
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
