"""The cells to quarantine for a lot, from the lot genealogy in InfluxDB (measurement lot_genealogy)."""

from __future__ import annotations

from dataclasses import dataclass

from linewatch.core.settings import InfluxSettings
from linewatch.storage.influx import influxql
from linewatch.storage.measurements import LOT_GENEALOGY


@dataclass(frozen=True)
class Affected:
    cells: dict[str, list[str]]  # per lot asked for: its cells, sorted, each once
    known: set[str]  # every lot the genealogy names (cell batches and their input lots)


def affected_cells(influx: InfluxSettings, lots: list[str]) -> Affected:
    """A cell batch is affected by a lot when it consumed the lot, or is the lot itself."""
    query = f"SELECT input_lots, cells, lot_id FROM {LOT_GENEALOGY} WHERE kind = 'cells_produced'"  # noqa: S608 (no input)
    produced = influxql(influx, query)
    batches = [
        (batch, (inputs or "").split(","), [c for c in (built or "").split(",") if c])
        for series in produced
        for _, inputs, built, batch in series["values"]
    ]
    cells = {
        lot: sorted({c for batch, inputs, built in batches if lot in inputs or lot == batch for c in built})
        for lot in lots
    }
    return Affected(cells, {lot for batch, inputs, _ in batches for lot in [batch, *inputs] if lot})
