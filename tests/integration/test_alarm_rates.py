"""The alarm engine over hours of simulated normal operation stays within the alarm-rate budget (in-process,
but minutes of simulation: not a unit test)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import msgspec
import pytest

from linewatch.core.plant import PlantModel
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.kpi import AlarmRow, compute, is_alarm
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import load_rules
from linewatch.services.alerter.state import UnitState
from linewatch.simulation.plant_sim import simulated

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 7200

pytestmark = pytest.mark.slow


@pytest.fixture
def engine(plant: PlantModel) -> AlarmEngine:
    return AlarmEngine(plant, load_rules(), load_alarm_database())


def test_eight_hours_of_normal_operation_stay_within_the_alarm_rate_budget(
    plant: PlantModel, engine: AlarmEngine
) -> None:
    """Spec, SPC and exposure alarms only (anomaly alarms need a model: `linewatch drill` runs everything)."""
    units: dict[str, UnitState] = {}
    rows = []
    for item in simulated(plant, T0, 8.0, seed=5):
        for event in engine.on_frame(units.setdefault(item.equipment_id, UnitState()), item):
            rows.append(msgspec.convert(msgspec.structs.asdict(event), AlarmRow))
    start, end = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 8 * 3600, UTC)
    report = compute(rows, start, end, [a.name for a in plant.areas])
    assert all(kpi.per_10_min <= 1.0 and kpi.floods == 0 for kpi in report.areas.values()), report.lines()
    assert report.chattering == [] and report.stale == []
    assert Counter(r.alarm_id for r in rows if is_alarm(r)).most_common(1)[0][1] <= 3 if rows else True
