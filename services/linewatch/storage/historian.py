"""Telemetry frames from outside Kafka: a frames file, InfluxDB, or any historian's CSV export. Shared by
training and evaluation (scorer), plant drafts and recording imports.

A CSV file is one run (a shift, a batch, an experiment): its own warm-up, its own labels. Its delimiter is
detected; a decimal comma is an option; a missing or mistyped column is refused with the columns there are.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import overload

import numpy as np

from linewatch.core.commandline import UsageError
from linewatch.core.contract import (
    FRAME_SAMPLES,
    NAME_PATTERN,
    TELEMETRY_SCHEMA_VERSION,
    Sample,
    TelemetryFrame,
    equipment_fields,
    reading,
    telemetry_decoder,
)
from linewatch.core.plant import PlantModel
from linewatch.core.settings import InfluxSettings
from linewatch.core.timeutil import parse_time
from linewatch.storage.influx import influxql
from linewatch.storage.measurements import TELEMETRY

TIME_COLUMNS = ("timestamp", "time", "datetime", "date_time", "date", "ts")
SLASHED = re.compile(r"^(\d{1,2})/(\d{1,2})/")  # a date written 25/09/2017 or 9/25/2017
ROW_PERIOD_S = 1.0  # rows of a file without times are taken as this far apart: every feature counts in samples
ROWS_JUDGED = 50  # a first column's leading rows that tell whether it holds times
EPOCH_FLOOR_S = 1e8  # a number in a time column below this (1973) is a sample index, not an epoch time
# Blank cells are the last reading held for up to this many of the column's own spacings (the scorer's limit for
# a silence within a stream); a longer silence is a sensor missing.
HOLD_SPACINGS = 5
UNIT_ROWS = 3  # rows under a header without a number (units, descriptions) that are left out
RISING_SHARE = 0.9  # of an unnamed first column's steps must rise for it to be a time (some exports repeat a row)
NORMAL_LABELS = {"", "0", "normal", "false", "no", "ok", "none", "nan"}


def frames_file(path: Path) -> Iterator[TelemetryFrame]:
    """JSON lines of telemetry frames, optionally gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield telemetry_decoder.decode(line)


def influx(settings: InfluxSettings, start: datetime, end: datetime, plant: PlantModel) -> Iterator[TelemetryFrame]:
    """Telemetry points back from InfluxDB (InfluxQL: 1.x, or 2.x/3.x through the v1 API), as frames."""
    for equipment in plant.equipment:
        # Equipment ids come from the plant model and times from datetime: no user text reaches the query.
        query = (
            f"SELECT * FROM {TELEMETRY} WHERE equipment = '{equipment.id}' AND time >= '{start.isoformat()}' "
            f"AND time < '{end.isoformat()}' ORDER BY time"
        )
        for series in influxql(settings, query, epoch="ns"):
            yield from frames_from_rows(plant, equipment.id, series["columns"], series["values"])


def frames_from_rows(
    plant: PlantModel, equipment_id: str, columns: list[str], rows: list[list[object]], recipe: str | None = None
) -> Iterator[TelemetryFrame]:
    """Rows of [time ns, value per column..., state?, lot_id?] as frames of up to FRAME_SAMPLES samples; `recipe`
    is their run context (a CSV run: its file)."""
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
                recipe=recipe,
            )
            chunk.clear()

    for row in rows:
        cells = {n: row[i] for n, i in index.items() if row[i] is not None}
        values = {n: v for n, cell in cells.items() if (v := reading(float(cell))) is not None}  # type: ignore[arg-type]
        if not values:
            continue
        ts = datetime.fromtimestamp(int(row[0]) / 1e9, UTC)  # type: ignore[call-overload]
        state = str(row[state_at]) if state_at is not None and row[state_at] else "running"
        lot = str(row[lot_at]) if lot_at is not None and row[lot_at] else None
        if chunk and (len(chunk) >= FRAME_SAMPLES or chunk[0][0] != state or chunk[0][1] != lot):
            yield from flush()
        chunk.append((state, lot, Sample(ts=ts, values=values)))
    yield from flush()


# -- CSV --------------------------------------------------------------------------------------------------


def sensor_name(column: str) -> str:
    """A column header as a sensor name that follows the contract's name rule ("Volume Flow, l/min" ->
    "Volume_Flow_l_min")."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", column.strip()).strip("_.-")[:64]
    if not re.match(NAME_PATTERN, name):
        name = ("s_" + name)[:64] if name else "sensor"
    return name


class Rows(Sequence[list[str]]):
    """A table's data rows, split into cells when read: held as one string a line, not one a cell (a 200,000-row,
    50-column export took 1 GB as cells)."""

    def __init__(self, lines: list[str], delimiter: str) -> None:
        self._lines = lines
        self._delimiter = delimiter

    def _split(self, lines: list[str]) -> Iterator[list[str]]:
        if self._delimiter == " ":  # columns aligned with spaces, as simulators and older tools write them
            return (line.split() for line in lines)
        return csv.reader(lines, delimiter=self._delimiter)

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> list[str]: ...
    @overload
    def __getitem__(self, index: slice) -> list[list[str]]: ...
    def __getitem__(self, index: int | slice) -> list[str] | list[list[str]]:
        if isinstance(index, slice):
            return list(self._split(self._lines[index]))
        return next(self._split([self._lines[index]]))

    def __iter__(self) -> Iterator[list[str]]:
        return self._split(self._lines)


@dataclass(frozen=True)
class CsvTable:
    path: Path
    header: list[str]
    rows: Rows
    delimiter: str
    notes: list[str] = field(default_factory=list)

    def column(self, name: str, what: str) -> int:
        if name not in self.header:
            there = ", ".join(repr(c) for c in self.header)
            raise UsageError(f"{self.path}: no {what} column {name!r}; its columns are: {there}")
        return self.header.index(name)


def read_table(path: Path) -> CsvTable:
    """A CSV export as a header and rows. Comment lines (`#`), a preamble above the header (lines of another width
    than the data's) and unit rows under it (no number in any cell) are left out and said so in `notes`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"no file {path}") from None
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"{path} is empty")
    delimiter = _delimiter(lines[:20])
    data = lines[len(lines) // 2 : len(lines) // 2 + 20]
    if all(len(row) == 1 for row in Rows(data, delimiter)):  # a preamble misled it: the data decide
        delimiter = _delimiter(data)
    lines = [line for line in lines if line.strip(delimiter + " \t")]
    rows = Rows(lines, delimiter)
    middle = rows[len(lines) // 2 : len(lines) // 2 + 20]  # data, past any preamble
    width = Counter(len(row) for row in middle).most_common(1)[0][0]
    top = next(i for i, row in enumerate(rows) if len(row) == width)
    notes = [f"{top} line(s) above the header left out (an export's preamble)"] if top else []
    header = [cell.strip() for cell in rows[top]]
    if all(_reads_as(float, cell) for cell in header):  # no header row: the first line is data
        names = [f"column_{i + 1}" for i in range(len(header))]
        return CsvTable(path, names, Rows(lines[top:], delimiter), delimiter, notes)
    first = top + 1
    while first < min(len(lines), top + 1 + UNIT_ROWS) and not any(_reads_as(float, cell) for cell in rows[first]):
        first += 1
    if first > top + 1:
        notes.append(f"{first - top - 1} row(s) under the header without a number left out (units)")
    return CsvTable(path, header, Rows(lines[first:], delimiter), delimiter, notes)


def _delimiter(lines: list[str]) -> str:
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = max(",;\t|", key=lines[0].count)
    if delimiter not in lines[0] and len(lines[0].split()) > 1:
        return " "  # columns aligned with spaces, as simulators and older tools write them
    return delimiter


def _reads_as(read: Callable[[str], object], text: str) -> bool:
    try:
        read(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RowTimes:
    """Where a table's rows get their times: one column; a date column and a time-of-day column (`Date;Time`);
    or, with no column named for it and a first column that holds no times, the rows' order, `ROW_PERIOD_S` apart
    (benchmark sets such as Tennessee Eastman have no time column). Slashed dates are day-first unless the file
    shows a month first (`9/25/2017`)."""

    columns: tuple[int, ...]
    name: str
    month_first: bool = False

    def of(self, record: list[str], row: int) -> float:
        """The row's time in epoch seconds; ValueError naming the forms accepted."""
        if not self.columns:
            return row * ROW_PERIOD_S
        text = " ".join(record[i].strip() for i in self.columns)
        return parse_time(SLASHED.sub(r"\2/\1/", text, count=1) if self.month_first else text).timestamp()

    def note(self) -> str | None:
        if self.month_first:
            return f"dates in {self.name!r} read month first (a second field over 12 shows it)"
        if self.columns:
            return None
        return (
            f"no time column: rows taken as samples {ROW_PERIOD_S:g} s apart, in file order "
            "(name one with --timestamp-column)"
        )


def row_times(table: CsvTable, given: str | None) -> RowTimes:
    if given is not None:
        return _dated(table, (table.column(given, "timestamp"),), given)
    named = {column.lower(): i for i, column in enumerate(table.header)}
    first = table.rows[0] if table.rows else []
    if (
        "date" in named
        and "time" in named
        and not _reads_as(parse_time, first[named["time"]] if len(first) > named["time"] else "")
    ):
        at = (named["date"], named["time"])  # the time column holds times of day only
        return _dated(table, at, f"{table.header[at[0]]} and {table.header[at[1]]}")
    for i, column in enumerate(table.header):
        if column.lower() in TIME_COLUMNS:
            return _dated(table, (i,), column)
    if _holds_times([row[0] for row in table.rows[:ROWS_JUDGED] if row]):
        return _dated(table, (0,), table.header[0])
    return RowTimes((), "row order")


def _dated(table: CsvTable, columns: tuple[int, ...], name: str) -> RowTimes:
    """The columns' times, month first where the file's first or last rows show it (`9/25/2017`: no month 25)."""
    rows = [*table.rows[:ROWS_JUDGED], *table.rows[-ROWS_JUDGED:]]
    fields = [
        (int(match[1]), int(match[2]))
        for row in rows
        if len(row) > columns[0] and (match := SLASHED.match(row[columns[0]].strip()))
    ]
    month_first = any(second > 12 for _, second in fields) and all(first <= 12 for first, _ in fields)
    return RowTimes(columns, name, month_first)


def _holds_times(cells: list[str]) -> bool:
    """Whether an unnamed first column is a time: every cell a time; numbers only where they rise (a sensor's go up
    and down, a label's or a batch number's stand still) and as epoch times or a whole sample index (a counter's
    steps are not whole)."""
    if not cells:
        return False
    try:
        times = [parse_time(cell).timestamp() for cell in cells]
    except ValueError:
        return False
    if not all(_reads_as(float, cell) for cell in cells):
        return True  # written as dates and times
    steps = np.diff(times)
    rising = len(steps) > 0 and bool(np.all(steps >= 0)) and bool(np.mean(steps > 0) >= RISING_SHARE)
    return rising and (min(times) >= EPOCH_FLOOR_S or all(float(cell).is_integer() for cell in cells))


def number(text: str, decimal_comma: bool) -> float | None:
    text = text.strip()
    if decimal_comma:
        text = text.replace(".", "").replace(",", ".") if "," in text else text
    try:
        value = float(text)
    except ValueError:
        return None
    return reading(value)


def is_fault(label: str) -> bool:
    """A label column's cell: any non-zero number, or any name but the usual words for normal, is a fault."""
    text = label.strip()
    try:
        return float(text.replace(",", ".")) != 0.0
    except ValueError:
        return text.lower() not in NORMAL_LABELS


@dataclass(frozen=True)
class CsvMapping:
    """How CSV files from another historian map to one equipment unit of the plant model."""

    files: list[Path]
    equipment_id: str
    timestamp_column: str | None = None  # None: found by `row_times`
    columns: dict[str, str] = field(default_factory=dict)  # CSV column -> sensor; empty: by the sensors' names
    label_column: str | None = None
    decimal_comma: bool = False


@dataclass
class CsvRun:
    """One file: its frames (their recipe, the run context, is the file's name), the label of each row (time,
    fault?), and what did not map."""

    path: Path
    frames: list[TelemetryFrame]
    labels: list[tuple[float, bool]]
    unmapped_sensors: list[str]
    unused_columns: list[str]
    notes: list[str] = field(default_factory=list)  # how the file was read: a preamble, unit rows, no times


def csv_runs(mapping: CsvMapping, plant: PlantModel) -> list[CsvRun]:
    equipment = plant.equipment_by_id.get(mapping.equipment_id)
    if equipment is None:
        known = ", ".join(list(plant.equipment_by_id)[:12]) + (" ..." if len(plant.equipment) > 12 else "")
        raise UsageError(
            f"no equipment {mapping.equipment_id!r} in the plant file ({known}); "
            "set LINEWATCH_PLANT_FILE, or draft one with `linewatch plant draft`"
        )
    sensors = plant.classes[equipment.equipment_class].sensors
    unknown = sorted(set(mapping.columns.values()) - set(sensors))
    if unknown:
        raise UsageError(
            f"{mapping.equipment_id} ({equipment.equipment_class}) has no sensor(s) {', '.join(unknown)}; "
            f"its sensors are: {', '.join(sensors)}"
        )
    return [_csv_run(path, mapping, plant) for path in mapping.files]


def _csv_run(path: Path, mapping: CsvMapping, plant: PlantModel) -> CsvRun:
    equipment = plant.equipment_by_id[mapping.equipment_id]
    known = plant.classes[equipment.equipment_class].sensors
    table = read_table(path)
    times = row_times(table, mapping.timestamp_column)
    label_at = table.column(mapping.label_column, "label") if mapping.label_column else None
    if mapping.columns:
        columns = {table.column(column, "mapped"): sensor for column, sensor in mapping.columns.items()}
    else:
        columns = {i: sensor_name(c) for i, c in enumerate(table.header) if sensor_name(c) in known}
        if not columns:
            raise UsageError(
                f"{path}: no column is named like a sensor of {mapping.equipment_id} ({', '.join(known)}); "
                "map them with --map COLUMN=SENSOR, or draft a plant file from this CSV (`linewatch plant draft`)"
            )
    stamps: list[int] = []
    cells: list[list[float | None]] = []
    labels: list[tuple[float, bool]] = []
    for row, record in enumerate(table.rows):
        if len(record) <= max(*times.columns, *columns, label_at or 0):
            continue  # a short line (a truncated export): its values are unknown
        try:
            seconds = times.of(record, row)
        except ValueError as exc:
            raise UsageError(f"{path}, data row {row + 1} under the header, column {times.name!r}: {exc}") from None
        stamps.append(int(seconds * 1e9))
        cells.append([number(record[i], mapping.decimal_comma) for i in columns])
        if label_at is not None:
            labels.append((seconds, is_fault(record[label_at])))
    order = np.argsort(stamps, kind="stable")
    values = np.array(cells, dtype=float).reshape(len(cells), len(columns))[order]
    empty = [table.header[i] for i, column in zip(columns, values.T, strict=True) if np.isnan(column).all()]
    if empty and len(values):
        hint = "" if mapping.decimal_comma else "; if it writes numbers with a decimal comma, add --decimal-comma"
        raise UsageError(f"{path}: no numbers in column(s) {', '.join(map(repr, empty))}{hint}")
    values = np.column_stack([held(column) for column in values.T]) if len(values) else values
    rows = [[stamps[i], *row, "running"] for i, row in zip(order.tolist(), values.tolist(), strict=True)]
    names = ["time", *columns.values(), "state"]
    frames = list(frames_from_rows(plant, mapping.equipment_id, names, rows, recipe=sensor_name(path.stem)))
    used = {*times.columns, *columns, *([label_at] if label_at is not None else [])}
    return CsvRun(
        path,
        frames,
        sorted(labels),
        sorted(set(known) - set(columns.values())),
        [c for i, c in enumerate(table.header) if i not in used],
        [*table.notes, *([note] if (note := times.note()) else [])],
    )


def held(column: np.ndarray) -> np.ndarray:
    """A column's blank cells filled with its last reading while the silence lasts at most `HOLD_SPACINGS` of the
    column's own spacing between readings. Exports leave a slower or report-by-exception sensor blank between its
    readings, and each blank was a missing sensor (72 % of such a file's rows alarmed); a longer silence stays
    missing."""
    present = ~np.isnan(column)
    at = np.flatnonzero(present)
    if len(at) < 2:
        return column
    limit = HOLD_SPACINGS * float(np.median(np.diff(at)))
    index = np.arange(len(column))
    last = np.maximum.accumulate(np.where(present, index, -1))
    fill = ~present & (last >= 0) & (index - last <= limit)
    out = column.copy()
    out[fill] = column[last[fill]]
    return out


def add_csv_arguments(parser: argparse.ArgumentParser, labels: bool = False) -> None:
    parser.add_argument(
        "--csv", "--file", dest="csv", type=Path, action="append", default=[], metavar="FILE",
        help="CSV from another historian; repeatable: each file is a run with its own warm-up",
    )  # fmt: skip
    parser.add_argument("--equipment", help="the equipment id (in LINEWATCH_PLANT_FILE) the CSV belongs to")
    parser.add_argument(
        "--timestamp-column",
        help="default: a column called time, timestamp, datetime ... (or Date and Time); else the first if it holds "
        "times; else the rows' order, 1 s apart",
    )
    parser.add_argument(
        "--map", action="append", default=[], metavar="COLUMN=SENSOR",
        help="repeatable; default: columns named like the unit's sensors",
    )  # fmt: skip
    parser.add_argument("--decimal-comma", action="store_true", help="numbers are written 3,14")
    if labels:
        parser.add_argument("--label-column", help="a number (non-zero = fault) or a name (normal, ok, 0 = normal)")


def csv_mapping(args: argparse.Namespace) -> CsvMapping:
    """The mapping the CSV arguments describe (checked against the plant model when read)."""
    if not args.csv:
        raise UsageError("no CSV file: give --csv FILE")
    if not args.equipment:
        raise UsageError("which equipment is this CSV? give --equipment ID (an id of LINEWATCH_PLANT_FILE)")
    columns: dict[str, str] = {}
    for item in args.map:
        column, separator, sensor = item.partition("=")
        if not separator or not column or not sensor:
            raise UsageError(f"--map {item!r}: write COLUMN=SENSOR")
        columns[column] = sensor
    return CsvMapping(
        list(args.csv),
        args.equipment,
        args.timestamp_column,
        columns,
        getattr(args, "label_column", None),
        args.decimal_comma,
    )
