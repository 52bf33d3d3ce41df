"""`linewatch plant draft`: a plant file for equipment known only from a CSV export (its columns become sensors,
their normal ranges come from the data), so foreign data goes from export to trained model in one step."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from linewatch.core.commandline import UsageError
from linewatch.core.contract import NAME_PATTERN
from linewatch.core.plant import PlantModel
from linewatch.storage.historian import CsvTable, is_fault, number, read_table, row_times, sensor_name

# Columns that hold labels or annotations rather than measurements: a model fed these would learn the answer.
LABEL_NAMES = re.compile(
    r"^(anomal(y|ies)|is_anomaly|label(s)?|fault(s|_?id|_?number|_?type)?|changepoint|change_point|attack|"
    r"class|target|outlier|y)$",
    re.IGNORECASE,
)

INDEX_SHARE = 0.95  # of its steps the same rise: a column counts rows


def draft(
    tables: list[CsvTable],
    equipment_id: str,
    timestamp_column: str | None,
    decimal_comma: bool,
    label_column: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The plant file (as a YAML-ready dict) for one unit of one class, and notes on what was left out."""
    if not re.match(NAME_PATTERN, equipment_id) or len(equipment_id) > 64:
        raise UsageError(f"--equipment {equipment_id!r}: use letters, digits, '_', '.', '-' (64 at most)")
    notes: list[str] = []
    first = tables[0]
    columns: dict[str, list[float]] = {}
    words: Counter[str] = Counter()  # cells that hold something other than a number (blank cells are no reading)
    times: list[float] = []
    for table in tables:
        if table.header != first.header:
            raise UsageError(f"{table.path} has other columns than {first.path}: draft from files of one layout")
        when = row_times(table, timestamp_column)
        if table is first:
            notes += [*table.notes, *([note] if (note := when.note()) else [])]
        for row, record in enumerate(table.rows):
            if len(record) != len(table.header):
                continue
            try:
                times.append(when.of(record, row))
            except ValueError as exc:
                raise UsageError(f"{table.path}, column {when.name!r}: {exc}") from None
            for i, column in enumerate(table.header):
                if i not in when.columns:
                    value = number(record[i], decimal_comma)
                    columns.setdefault(column, []).append(np.nan if value is None else value)
                    words[column] += value is None and bool(record[i].strip())
    sensors: dict[str, dict[str, Any]] = {}
    for column, raw in columns.items():
        values = np.array(raw)
        name = sensor_name(column)
        if column == label_column or LABEL_NAMES.match(column.strip()):
            labelled = sum(is_fault(str(v)) for v in raw if not np.isnan(v))
            notes.append(f"column {column!r} looks like a label ({labelled} faulty rows): not a sensor")
            continue
        finite = values[np.isfinite(values)]
        if words[column] > len(finite):
            notes.append(f"column {column!r} is mostly not numbers: left out")
            continue
        if len(finite) < 2:
            notes.append(f"column {column!r} has no readings: left out")
            continue
        low, high = (float(q) for q in np.quantile(finite, [0.001, 0.999]))
        if high <= low:
            notes.append(f"column {column!r} is constant ({low:g}) in these files: no information, left out")
            continue
        if counts_rows(finite):
            notes.append(f"column {column!r} counts rows (an index): not a sensor")
            continue
        if name in sensors:
            raise UsageError(f"columns {column!r} and another both become sensor {name!r}: rename one")
        margin = 0.1 * (high - low)
        sensors[name] = {"unit": "unknown", "normal": [_round(low - margin), _round(high + margin)]}
        if name != column:
            notes.append(f"column {column!r} is sensor {name!r}")
    if not sensors:
        raise UsageError(f"{first.path}: no numeric column to make a sensor of")
    steps = np.diff(np.sort(np.array(times)))
    period = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 1.0
    equipment_class = sensor_name(f"{equipment_id.lower()}-class")
    document = {
        "site": "site",
        "sample_period_s": _round(period),
        "classes": {
            equipment_class: {
                "description": f"drafted by `linewatch plant draft` from {', '.join(t.path.name for t in tables)}",
                "sensors": sensors,
            }
        },
        "areas": [
            {
                "name": "area",
                "lines": [{"name": "line", "equipment": [{"class": equipment_class, "ids": [equipment_id]}]}],
            }
        ],
    }
    PlantModel.model_validate(document)  # what we write must load
    return document, notes


def counts_rows(values: np.ndarray) -> bool:
    """An index or a sample number: nearly every step the same rise (a run's restart aside). As a sensor its level
    would be new on every fresh row."""
    steps = np.diff(values)
    if len(steps) < 2:
        return False
    rise, count = max(zip(*np.unique(steps, return_counts=True), strict=True), key=lambda pair: pair[1])
    return bool(rise > 0 and count >= INDEX_SHARE * len(steps))


def write(document: dict[str, Any], path: Path) -> None:
    header = (
        "# Drafted by `linewatch plant draft`: set each sensor's engineering unit, and spec limits ([low, high]) and\n"
        "# `critical: true` where the process has them; normal ranges are the data's 0.1-99.9 % range plus 10 %.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=120), encoding="utf-8")


def read_tables(paths: list[Path]) -> list[CsvTable]:
    if not paths:
        raise UsageError("no CSV file: give --csv FILE")
    return [read_table(path) for path in paths]


def _round(value: float) -> float:
    return float(f"{value:.6g}")
