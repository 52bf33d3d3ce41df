"""Alarm philosophy: the master alarm database (its priority matrix and JSON Schema), priorities from the matrix
rather than the condition kind, suppression by equipment phase, the rationalization carried by every alarm event
into notifications and InfluxDB, and the bad-actor report's suggested delays checked against the lifecycle."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support import T0, frame, raises

from linewatch.core.contract import encoder
from linewatch.core.plant import PlantModel
from linewatch.services.alerter import kpi, report
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.lifecycle import Alarm, Priority, Settings
from linewatch.services.alerter.notify import text_of
from linewatch.services.alerter.rationalization import (
    DEFAULT_ALARM_DATABASE,
    SCHEMA_FILE,
    AlarmDatabase,
    AlarmDatabaseError,
    json_schema,
    load_alarm_database,
)
from linewatch.services.alerter.rules import load_rules
from linewatch.services.alerter.state import UnitState
from linewatch.storage.lineprotocol import alarm_lines
from linewatch.tools.cli import main as cli

pytestmark = pytest.mark.alarms


def database(**changes: Any) -> dict[str, Any]:
    """The reference plant's database as data, with top-level changes."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_ALARM_DATABASE.read_text())
    return document | changes


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "test-entry",
        "condition": "spec_limit",
        "equipment_class": "coater",
        "sensor": "coating_weight",
        "severity": "major",
        "respond_within_s": 300,
        "cause": "c",
        "consequence": "q",
        "action": "a",
        "limit_basis": "b",
        "rationalized_by": "test",
        "rationalized_on": date(2026, 12, 1),
    }
    return base | fields


# -- the matrix ---------------------------------------------------------------------------------------------


def test_priority_follows_severity_and_time_to_respond_at_the_column_bounds() -> None:
    matrix = load_alarm_database().matrix
    bounds = [r.max_s for r in matrix.response_times]
    for severity, row in matrix.priorities.items():
        for column, bound in enumerate(bounds):
            assert matrix.priority(severity, bound) == row[column]  # a bound belongs to its own column
            beyond = min(column + 1, len(bounds) - 1)
            assert matrix.priority(severity, bound + 1) == row[beyond]
    # Urgency only rises with severity and with less time to respond.
    rank = {p: i for i, p in enumerate(Priority)}
    severities = list(matrix.severities)
    for worse, better in zip(severities[1:], severities, strict=False):
        assert all(rank[a] >= rank[b] for a, b in zip(matrix.priorities[worse], matrix.priorities[better], strict=True))
    for row in matrix.priorities.values():
        assert [rank[p] for p in row] == sorted((rank[p] for p in row), reverse=True)


@pytest.mark.parametrize(
    ("label", "change", "says"),
    [
        ("short row", lambda m: m["priorities"].update(minor=["low"]), "priorities.minor needs 4 entries"),
        ("unordered", lambda m: m["response_times"].reverse(), "ascending order"),
        ("unknown severity row", lambda m: m["priorities"].pop("severe"), "one row per severity"),
        ("unknown priority", lambda m: m["priorities"].update(minor=["low", "low", "low", "urgent"]), "minor.3"),
    ],
)
def test_a_broken_matrix_is_refused_with_the_reason(label: str, change: Any, says: str) -> None:
    document = database()
    change(document["matrix"])
    with pytest.raises(ValueError, match=says):
        AlarmDatabase.model_validate(document)


def test_an_entry_with_an_unknown_severity_or_a_duplicate_id_is_refused() -> None:
    with pytest.raises(ValueError, match="severity 'catastrophic' is not one of"):
        AlarmDatabase.model_validate(database(alarms=[entry(severity="catastrophic")]))
    with pytest.raises(ValueError, match="unique"):
        AlarmDatabase.model_validate(database(alarms=[entry(), entry()]))


# -- the schema and `alarms validate` ------------------------------------------------------------------------


def test_the_schema_file_is_the_models_schema_and_accepts_the_shipped_database() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), "regenerate: schemas/alarm-database.v1.schema.json"
    validator = jsonschema.Draft202012Validator(json_schema(), format_checker=jsonschema.FormatChecker())
    shipped = json.loads(json.dumps(yaml.safe_load(DEFAULT_ALARM_DATABASE.read_text()), default=str))
    validator.validate(shipped)
    for broken in (
        shipped | {"alarms": [shipped["alarms"][0] | {"respond_within_s": 0}]},
        shipped | {"alarms": [{k: v for k, v in shipped["alarms"][0].items() if k != "action"}]},
        shipped | {"alarms": [shipped["alarms"][0] | {"suppress_in": ["lunch"]}]},
        shipped | {"colour": "red"},
    ):
        assert not validator.is_valid(broken)
        with pytest.raises(ValueError):
            AlarmDatabase.model_validate(broken)


def test_validate_names_the_line_and_field_of_each_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DEFAULT_ALARM_DATABASE.read_text().replace("respond_within_s: 120", "respond_within_s: -5", 1)
    broken = tmp_path / "alarms.yaml"
    broken.write_text(text)
    line = 1 + text.splitlines().index("    respond_within_s: -5")
    with pytest.raises(AlarmDatabaseError, match=rf"alarms.yaml:{line}: alarms.0.respond_within_s"):
        load_alarm_database(broken)
    with pytest.raises(SystemExit) as exited:
        cli(["alarms", "validate", str(broken)])
    said = capsys.readouterr().out
    assert exited.value.code == 1
    assert f"alarms.yaml:{line}: alarms.0.respond_within_s: Input should be greater than 0" in said
    with pytest.raises(SystemExit) as exited:
        cli(["alarms", "validate"])
    assert exited.value.code == 0
    assert "alarms of the plant model no entry rationalizes: 0" in capsys.readouterr().out


# -- priorities and rationalization on the events ------------------------------------------------------------


def test_priority_comes_from_the_matrix_and_the_event_carries_the_rationalization(plant: PlantModel) -> None:
    rules = load_rules()
    engine, unit = AlarmEngine(plant, rules, load_alarm_database()), UnitState()
    engine.on_frame(unit, frame(plant, "C1-COAT-01", T0, 120))
    [raised] = raises(engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 120, 30, coating_weight=25.0)))
    # coating_weight is critical to quality: the ctq entry, major x 900 s -> medium, not rules.yaml's "high".
    assert rules.conditions["spec_limit"].priority == "high"
    assert (raised.rationalization, raised.severity, raised.priority) == ("ctq-spec-limit", "major", "medium")
    assert raised.respond_within_s == 900 and raised.corrective_action and "quarantine" in raised.corrective_action
    assert raised.consequence and raised.probable_cause
    text = text_of(raised)
    assert f"Action: {raised.corrective_action}" in text and raised.consequence in text
    [point] = alarm_lines(encoder.encode(raised))
    assert b'rationalization="ctq-spec-limit"' in point and b"corrective_action=" in point
    # The same breach on a sensor that is not critical to quality: the general entry, minor -> low.
    engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 150, 200))
    [other] = raises(engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 350, 30, web_speed=17.0)))
    assert (other.rationalization, other.priority) == ("equipment-limit", "low")


def test_an_unrationalized_alarm_still_works_with_its_condition_default_and_says_so(plant: PlantModel) -> None:
    rules = load_rules()
    empty = AlarmDatabase.model_validate(database(alarms=[]))
    engine, unit = AlarmEngine(plant, rules, empty), UnitState()
    engine.on_frame(unit, frame(plant, "C1-COAT-01", T0, 120))
    [raised] = raises(engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 120, 30, coating_weight=25.0)))
    assert raised.rationalization is None and raised.corrective_action is None
    assert raised.priority == rules.conditions["spec_limit"].priority
    assert text_of(raised).endswith("Not rationalized yet")
    rows = kpi.rows_of([raised])
    assert report.build(rows, raised.ts, raised.ts + timedelta(hours=1)).unrationalized == [(raised.alarm_id, 1)]


# -- suppression by state ------------------------------------------------------------------------------------


def test_suppression_follows_each_alarms_rationalization(plant: PlantModel) -> None:
    engine, unit = AlarmEngine(plant, load_rules(), load_alarm_database()), UnitState()
    # H2S is a safety alarm (suppress_in: []): it annunciates in maintenance too.
    engine.on_frame(unit, frame(plant, "S1-DRY-01", T0, 60, state="maintenance"))
    [h2s] = raises(engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 60, 30, state="maintenance", h2s=2.0)))
    assert (h2s.alarm_id, h2s.priority) == ("S1-DRY-01/h2s/spec_high", "critical")
    # Dew point is suppressed in maintenance (the room is opened by design), annunciated in idle.
    assert not raises(engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 90, 60, state="maintenance", dew_point=-30)))
    [dew] = raises(engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 150, 30, state="idle", dew_point=-30.0)))
    assert dew.alarm_id == "S1-DRY-01/dew_point/spec_high"


def test_start_up_and_recipe_change_suppress_process_alarms_unless_rationalized_otherwise(plant: PlantModel) -> None:
    coater = plant.classes["coater"]
    assert coater.settle_s > 30
    for suppress_in, alarmed in ((["start_up", "recipe_change"], False), ([], True)):
        entries = [entry(suppress_in=suppress_in)]
        engine = AlarmEngine(plant, load_rules(), AlarmDatabase.model_validate(database(alarms=entries)))
        unit = UnitState()
        # Starting up: the breach lies within the settle time.
        events = engine.on_frame(unit, frame(plant, "C1-COAT-01", T0, 30, coating_weight=25.0))
        assert bool(raises(events)) is alarmed, suppress_in
        # Settled, then a recipe change: the same again.
        engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 30, 400))
        changed = engine.on_frame(unit, frame(plant, "C1-COAT-01", T0 + 430, 30, recipe="other", coating_weight=25.0))
        assert bool(raises(changed)) is alarmed, suppress_in


# -- the bad-actor report ------------------------------------------------------------------------------------


def _run(alarm: Alarm, condition: list[tuple[float, bool]]) -> list[kpi.AlarmRow]:
    """A condition sampled every second through one alarm's lifecycle, as KPI rows."""
    rows = []
    for ts, value in condition:
        for t in alarm.observe(ts, value):
            rows.append(
                kpi.AlarmRow(
                    ts=datetime.fromtimestamp(t.ts, UTC),
                    area="a",
                    alarm_id=alarm.alarm_id,
                    kind="transition",
                    state=t.state.value,
                    previous=t.previous.value,
                    cause=t.cause,
                    priority=t.priority.value,
                    annunciate=t.annunciate,
                    rationalization="r",
                )
            )
    return rows


def _seconds(pattern: list[tuple[bool, int]], repeats: int) -> list[tuple[float, bool]]:
    """(condition, seconds) runs repeated, one sample a second from T0."""
    values = [v for _ in range(repeats) for v, n in pattern for _ in range(n)]
    return [(T0 + i, v) for i, v in enumerate(values)]


def test_chattering_alarm_gets_an_off_delay_that_would_have_stopped_the_chatter() -> None:
    # Active for 8 s, gone for 3..6 s, over and over: chattering, with no delays set.
    pattern = [(True, 8), (False, 3), (True, 8), (False, 6), (True, 8), (False, 4)]
    condition = _seconds(pattern, 20)
    rows = _run(Alarm("U/x/spec_high", Settings(chatter_count=1000)), condition)
    start, end = rows[0].ts, rows[-1].ts + timedelta(minutes=10)
    assert kpi.compute(rows, start, end).chattering == ["U/x/spec_high"]
    built = report.build(rows, start, end)
    [suggestion] = [s for s in built.suggestions if s.problem == "chattering"]
    assert suggestion.setting == "off_delay_s" and 3 <= suggestion.value_s <= 10
    assert suggestion.removes >= 0.9 * suggestion.of
    # The same condition with the suggested off-delay: no longer chattering.
    tuned = _run(Alarm("U/x/spec_high", Settings(off_delay_s=suggestion.value_s, chatter_count=1000)), condition)
    assert kpi.compute(tuned, start, end).chattering == []
    assert any("off_delay_s=" in text for text in built.lines())


def test_fleeting_alarm_gets_an_on_delay_that_filters_the_blips_but_not_a_real_excursion() -> None:
    blips = _seconds([(True, 2), (False, 100), (True, 4), (False, 100), (True, 3), (False, 100)], 10)
    excursion = [(blips[-1][0] + 1 + i, True) for i in range(300)]
    rows = _run(Alarm("U/y/spec_low"), blips + excursion)
    start, end = rows[0].ts, rows[-1].ts + timedelta(minutes=10)
    built = report.build(rows, start, end)
    [suggestion] = [s for s in built.suggestions if s.problem == "fleeting"]
    assert suggestion.setting == "on_delay_s" and 3 <= suggestion.value_s < 60
    tuned = _run(Alarm("U/y/spec_low", Settings(on_delay_s=suggestion.value_s)), blips + excursion)
    raised = [r for r in tuned if kpi.is_alarm(r)]
    assert len(raised) == 1, "the lasting excursion still alarms, the blips no longer do"
    # Still active at the end: standing, and stale once a day has passed.
    assert [a for a, _ in built.standing] == ["U/y/spec_low"] and built.stale == []
    later = report.build(rows, start, end + timedelta(days=2))
    assert later.stale == ["U/y/spec_low"]


def test_report_ranks_bad_actors_by_annunciated_count() -> None:
    noisy = _run(Alarm("U/noisy/spc"), _seconds([(True, 5), (False, 55)], 6))
    quiet = _run(Alarm("U/quiet/spc"), _seconds([(True, 5), (False, 55)], 2))
    rows = noisy + quiet
    built = report.build(rows, min(r.ts for r in rows), max(r.ts for r in rows) + timedelta(hours=1))
    assert [(a, n) for a, n, _ in built.bad_actors] == [("U/noisy/spc", 6), ("U/quiet/spc", 2)]
    assert built.total == 8
