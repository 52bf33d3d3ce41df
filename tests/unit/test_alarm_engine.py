"""The alarm engine on hand-made and simulated telemetry: spec limits with delays and deadband, suppression by
equipment state, SPC run rules, lot exposure dose, anomaly scores, escalation, operator actions, stable event
ids and state that survives serialisation (what the faust table stores)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
from support import T0, frame, raises

from linewatch.core.contract import (
    ALARM_SCHEMA_VERSION,
    AlarmAction,
    AlarmEvent,
    AnomalyScores,
    SampleScore,
    equipment_fields,
)
from linewatch.core.plant import PlantModel
from linewatch.services.alerter import spc
from linewatch.services.alerter.engine import ActionNotApplicable, AlarmEngine, UnknownAlarm
from linewatch.services.alerter.lifecycle import Priority
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import Escalation, load_rules
from linewatch.services.alerter.state import UnitState, state_decoder, state_encoder
from linewatch.simulation.faults import plan_injection
from linewatch.simulation.plant_sim import simulated


def action(alarm_id: str, user: str, comment: str, at: float, name: str = "acknowledge") -> AlarmAction:
    return AlarmAction(
        schema_version=ALARM_SCHEMA_VERSION,
        action_id=f"{name}-{at:.0f}",
        alarm_id=alarm_id,
        equipment_id=alarm_id.split("/")[0],
        action=name,  # type: ignore[arg-type]
        user=user,
        comment=comment,
        requested_at=datetime.fromtimestamp(at, UTC),
    )


@pytest.fixture
def engine(plant: PlantModel) -> AlarmEngine:
    return AlarmEngine(plant, load_rules(), load_alarm_database())


def test_spec_limit_needs_the_on_delay_and_clears_only_past_the_deadband(
    plant: PlantModel, engine: AlarmEngine
) -> None:
    unit = UnitState()
    assert engine.on_frame(unit, frame(plant, "S1-DRY-01", T0, 60)) == []
    assert engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 60, 4, dew_point=-34.0)) == []  # 4 s < 5 s on-delay
    assert engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 64, 1, dew_point=-48.0)) == []  # blip over
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 65, 10, dew_point=-34.0))
    [raised] = raises(events)
    # Priority from the alarm database's matrix: major consequence, 10 min to respond.
    assert raised.alarm_id == "S1-DRY-01/dew_point/spec_high" and raised.priority == "medium"
    assert raised.ts == datetime.fromtimestamp(T0 + 70, UTC) and raised.lots == ["EL-SYN1-1"]
    assert "above upper spec limit -35" in raised.message and raised.value == -34.0
    # Back under the limit but inside the deadband (5 % of the 13 K normal range): still active.
    assert engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 75, 120, dew_point=-35.3)) == []
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 195, 70, dew_point=-40.0))
    assert [(e.previous, e.state, e.cause) for e in events] == [
        ("unacknowledged", "rtn_unacknowledged", "condition cleared")
    ]
    assert events[0].ts == datetime.fromtimestamp(T0 + 255, UTC)  # after the 60 s off-delay


def test_suppressed_by_design_while_idle_and_re_annunciated_on_restart(plant: PlantModel, engine: AlarmEngine) -> None:
    unit = UnitState()
    engine.on_frame(unit, frame(plant, "S1-MILL-01", T0, 1500))  # running past the 1200 s settle time
    [raised] = raises(engine.on_frame(unit, frame(plant, "S1-MILL-01", T0 + 1500, 20, jar_temp=70.0)))
    events = engine.on_frame(unit, frame(plant, "S1-MILL-01", T0 + 1520, 10, state="idle", jar_temp=70.0))
    assert [(e.state, e.cause) for e in events] == [("suppressed_by_design", "equipment not running")]
    assert not raises(events)
    # Restarted: nothing is judged during the settle time, then what is still wrong is annunciated again.
    assert not raises(engine.on_frame(unit, frame(plant, "S1-MILL-01", T0 + 1530, 600, jar_temp=70.0)))
    events = engine.on_frame(unit, frame(plant, "S1-MILL-01", T0 + 2130, 700, jar_temp=70.0))
    [again] = raises(events)
    assert again.alarm_id == raised.alarm_id and again.previous == "suppressed_by_design"


def test_spc_rules_fire_on_their_patterns_only() -> None:
    assert spc.violated([0.1, -0.2, 3.2], ["we1"]) == "we1"
    assert spc.violated([0.1, -0.2, 2.9], ["we1"]) is None
    assert spc.violated([2.5, 0.1, 2.2], ["we2"]) == "we2"
    assert spc.violated([2.5, 0.1, -2.2], ["we2"]) is None  # opposite sides
    assert spc.violated([1.5, 1.2, 0.2, 1.1, 1.3], ["we3"]) == "we3"
    assert spc.violated([0.1] * 7 + [0.2], ["we4"]) == "we4"
    assert spc.violated([0.1] * 6 + [-0.2, 0.2], ["we4"]) is None
    assert spc.violated([-1, -0.5, 0, 0.4, 0.9, 1.3], ["nelson3"]) == "nelson3"
    assert spc.violated([-1, -0.5, 0, 0.4, 0.3, 1.3], ["nelson3"]) is None


def feed_doser(
    plant: PlantModel, engine: AlarmEngine, unit: UnitState, t: float, feeds: list[float]
) -> tuple[float, list[AlarmEvent]]:
    """One SPC subgroup of the doser at each Li2S feed, from `t`: the time after them, and the events."""
    subgroup = engine.rules.spc.subgroup_s
    events: list[AlarmEvent] = []
    for feed in feeds:
        events += engine.on_frame(unit, frame(plant, "S1-DOSE-01", t, int(subgroup), li2s_feed=feed))
        t += subgroup
    return t, events


def test_spc_chart_baseline_then_a_shift_raises_an_alarm(plant: PlantModel, engine: AlarmEngine) -> None:
    rng = np.random.default_rng(4)
    unit = UnitState()
    baseline = [52.0 + float(rng.normal(0, 0.5)) for _ in range(engine.rules.spc.baseline_subgroups + 3)]
    t, _ = feed_doser(plant, engine, unit, T0, baseline)
    chart = unit.charts["li2s_feed"]
    assert chart.center is not None and chart.sigma is not None and chart.sigma > 0
    shifted = chart.center + 5 * chart.sigma  # well inside the spec limits [40, 65]
    _, events = feed_doser(plant, engine, unit, t, [shifted] * 3)
    [raised] = raises(events)
    # An electrolyte stoichiometry shift: major consequence, 30 min to respond -> medium (alarms.yaml).
    assert raised.alarm_id == "S1-DOSE-01/li2s_feed/spc" and raised.priority == "medium"
    assert "we1" in raised.message


def test_a_reading_whose_sums_overflow_is_left_out_of_the_spc_baseline(plant: PlantModel, engine: AlarmEngine) -> None:
    rng = np.random.default_rng(4)
    unit = UnitState()
    baseline = [52.0 + float(rng.normal(0, 0.5)) for _ in range(engine.rules.spc.baseline_subgroups + 4)]
    baseline[2] = 1e200  # finite, so the validator lets it through; its square is not
    t, _ = feed_doser(plant, engine, unit, T0, baseline)
    chart = unit.charts["li2s_feed"]
    assert chart.center is not None and chart.sigma is not None
    assert abs(chart.center - 52.0) < 1.0 and 0 < chart.sigma < 5.0
    _, events = feed_doser(plant, engine, unit, t, [chart.center + 5 * chart.sigma] * 3)
    assert [event.alarm_id for event in raises(events)] == ["S1-DOSE-01/li2s_feed/spc"]


def test_exposure_dose_over_the_limit_raises_a_latched_alarm_for_the_lot(
    plant: PlantModel, engine: AlarmEngine
) -> None:
    unit = UnitState()
    limit = engine.rules.exposure["dry_room"]["h2s"].limit
    per_second = 0.5  # ppm: the limit is crossed after limit / 0.5 h
    crossing = limit / per_second * 3600
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0, int(crossing) - 10, lot="EL-SYN1-7", h2s=per_second))
    assert not [e for e in raises(events) if e.condition == "exposure_dose"]
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + crossing - 10, 20, lot="EL-SYN1-7", h2s=per_second))
    [raised] = [e for e in raises(events) if e.condition == "exposure_dose"]
    assert raised.priority == "medium" and raised.lots == ["EL-SYN1-7"]
    assert raised.value is not None and raised.value > limit
    # The next lot starts a new dose: the condition clears, but a latched alarm waits for an operator.
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + crossing + 10, 10, lot="EL-SYN1-8", h2s=0.08))
    assert not [e for e in events if e.condition == "exposure_dose"]
    latched = unit.alarms["S1-DRY-01/h2s/exposure"].alarm
    assert latched.state == "unacknowledged" and not latched.active
    ack = action("S1-DRY-01/h2s/exposure", "quality", "lot EL-SYN1-7 quarantined", T0 + crossing + 30)
    [done] = engine.on_action(unit, plant.equipment_by_id["S1-DRY-01"].ref, ack)
    assert (done.previous, done.state, done.lots) == ("unacknowledged", "normal", ["EL-SYN1-7"])


def test_exposure_lots_are_the_lots_over_the_limit_not_the_lot_the_alarm_cleared_in(
    plant: PlantModel, engine: AlarmEngine
) -> None:
    limit = engine.rules.exposure["dry_room"]["h2s"].limit
    crossing = int(limit / 0.5 * 3600) + 10
    ref = plant.equipment_by_id["S1-DRY-01"].ref
    # Acknowledged while the lot is still in the room: the next lot clears the condition, and is not exposed.
    unit = UnitState()
    engine.on_frame(unit, frame(plant, "S1-DRY-01", T0, crossing, lot="EL-SYN1-7", h2s=0.5))
    engine.on_action(unit, ref, action("S1-DRY-01/h2s/exposure", "quality", "seen", T0 + crossing))
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + crossing, 10, lot="EL-SYN1-8", h2s=0.08))
    [cleared] = [e for e in events if e.condition == "exposure_dose"]
    assert (cleared.previous, cleared.state, cleared.lots) == ("acknowledged", "normal", ["EL-SYN1-7"])
    # Nobody acknowledged the latched alarm and the next lot goes over too: that lot is exposed and reported.
    unit = UnitState()
    engine.on_frame(unit, frame(plant, "S1-DRY-01", T0, crossing, lot="EL-SYN1-7", h2s=0.5))
    assert not engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + crossing, 10, lot="EL-SYN1-8", h2s=0.5))
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + crossing + 10, crossing, lot="EL-SYN1-8", h2s=0.5))
    [again] = [e for e in events if e.condition == "exposure_dose"]
    assert (again.previous, again.state, again.lots) == ("unacknowledged", "unacknowledged", ["EL-SYN1-7", "EL-SYN1-8"])


def scores(plant: PlantModel, unit: str, t0: float, flags: list[bool], role: str = "active") -> AnomalyScores:
    return AnomalyScores(
        **equipment_fields(plant.equipment_by_id[unit].ref),
        schema_version=1,
        model_version="v1",
        role=role,  # type: ignore[arg-type]
        samples=[
            SampleScore(
                ts=datetime.fromtimestamp(t0 + i, UTC),
                score=3.0 if flag else 0.2,
                anomalous=flag,
                t2=0.0,
                spe=0.0,
                iforest=0.0,
                univariate=0.0,
                missing=[],
                flatline=[],
                top_sensors=["jar_temp"],
            )
            for i, flag in enumerate(flags)
        ],
        lot_id="EL-SYN1-3",
    )


def test_anomaly_alarm_from_active_scores_only_then_escalation_until_acknowledged(plant: PlantModel) -> None:
    rules = load_rules()
    # The mill's anomaly alarm is low priority; escalate every priority here to see escalation work.
    rules = rules.model_copy(update={"escalation": Escalation(after_s=900.0, priorities=list(Priority))})
    engine, unit = AlarmEngine(plant, rules, load_alarm_database()), UnitState()
    engine.on_frame(unit, frame(plant, "S1-MILL-01", T0, 1300))
    assert engine.on_scores(unit, scores(plant, "S1-MILL-01", T0 + 1300, [True] * 30, role="shadow")) == []
    assert engine.on_scores(unit, scores(plant, "S1-MILL-01", T0 + 1300, [True] * 5)) == []  # 10 s on-delay
    [raised] = raises(engine.on_scores(unit, scores(plant, "S1-MILL-01", T0 + 1305, [True] * 10)))
    assert raised.alarm_id == "S1-MILL-01/anomaly" and "jar_temp" in raised.message
    assert raised.respond_within_s is not None
    after = raised.respond_within_s  # escalated once past its own maximum time to respond
    events = engine.on_scores(unit, scores(plant, "S1-MILL-01", T0 + 1315, [True] * int(after)))
    [escalation] = [e for e in events if e.kind == "escalation"]
    assert escalation.state == "unacknowledged" and escalation.annunciate
    more = engine.on_scores(unit, scores(plant, "S1-MILL-01", T0 + 1315 + after, [True] * 600))
    assert not [e for e in more if e.kind == "escalation"], "escalated twice"

    ack = action("S1-MILL-01/anomaly", "alice", "checking the cooling circuit", T0 + 2900)
    [audited] = engine.on_action(unit, plant.equipment_by_id["S1-MILL-01"].ref, ack)
    assert (audited.state, audited.user, audited.comment) == ("acknowledged", "alice", "checking the cooling circuit")
    with pytest.raises(ActionNotApplicable):
        engine.on_action(unit, plant.equipment_by_id["S1-MILL-01"].ref, ack)
    with pytest.raises(UnknownAlarm):
        engine.on_action(
            unit, plant.equipment_by_id["S1-MILL-01"].ref, msgspec.structs.replace(ack, alarm_id="S1-MILL-01/x")
        )


def test_serialised_state_gives_the_same_events_and_ids(plant: PlantModel, engine: AlarmEngine) -> None:
    """What the faust table stores between records must carry the whole state: a restart changes nothing."""
    fault = plan_injection(plant, "moisture_ingress", "S1-DRY-01", T0 + 900, np.random.default_rng(2))
    frames = [f for f in simulated(plant, T0, 1.0, seed=4, injections=[fault]) if f.equipment_id == "S1-DRY-01"]
    straight, stored = UnitState(), state_encoder.encode(UnitState())
    expected, got = [], []
    for item in frames:
        expected += engine.on_frame(straight, item)
        unit = state_decoder.decode(stored)
        got += engine.on_frame(unit, item)
        stored = state_encoder.encode(unit)
    assert raises(expected) and got == expected
    ids = [e.event_id for e in expected]
    assert len(ids) == len(set(ids))


def test_condition_registry_matches_the_contract_schema_and_rules() -> None:
    """A condition is one module plus one registry line; the contract, its schema and the rules name the same set."""
    import json
    from typing import get_args

    from linewatch.core.contract import AlarmCondition
    from linewatch.core.settings import REPO_ROOT
    from linewatch.services.alerter.conditions import CONDITIONS

    schema = json.loads((REPO_ROOT / "schemas" / "alarm-event.v1.schema.json").read_text())
    assert set(CONDITIONS) == set(get_args(AlarmCondition)) == set(schema["properties"]["condition"]["enum"])
    assert set(load_rules().conditions) == set(CONDITIONS)
    assert all(condition.name == name for name, condition in CONDITIONS.items())


def test_a_frame_published_again_upstream_is_dosed_once(plant: PlantModel, engine: AlarmEngine) -> None:
    """A validator that restarts publishes again what it had not committed, at new offsets: the copy must not add
    to a lot's dose a second time (seen as exposure alarms raised early after a kill -9 in the scale-out test)."""
    from linewatch.core.contract import encoder
    from linewatch.core.settings import KafkaSettings
    from linewatch.services.alerter.agents import apply

    topics = KafkaSettings().topics
    limit = engine.rules.exposure["dry_room"]["h2s"].limit
    half = int(limit / 0.5 * 3600 / 2) + 10  # seconds at 0.5 ppm for just over half the dose
    first = encoder.encode(frame(plant, "S1-DRY-01", T0, half, lot="EL-SYN1-7", h2s=0.5))
    unit = UnitState()
    assert apply(engine, plant, topics, unit, topics.valid, first) is not None
    assert apply(engine, plant, topics, unit, topics.valid, first) is None  # the copy
    assert unit.exposure["h2s"].dose < limit  # counted twice, it would be over
    second = encoder.encode(frame(plant, "S1-DRY-01", T0 + half, half, lot="EL-SYN1-7", h2s=0.5))
    events = apply(engine, plant, topics, unit, topics.valid, second)
    assert [e for e in raises(events or []) if e.condition == "exposure_dose"]
    # Remembered in the state the table keeps, so the copy is known on the worker that takes the unit over.
    assert apply(engine, plant, topics, state_decoder.decode(state_encoder.encode(unit)), topics.valid, first) is None


def dose_after(plant: PlantModel, frames: list[tuple[float, int, float, float]]) -> float:
    """The H2S dose of one lot in the dry room after frames of (start, samples, period, ppm)."""
    engine, unit = AlarmEngine(plant, load_rules(), load_alarm_database()), UnitState()
    for t0, n, period_s, ppm in frames:
        engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + t0, n, lot="EL-SYN1-7", period_s=period_s, h2s=ppm))
    return unit.exposure["h2s"].dose


def test_exposure_dose_is_an_integral_over_time_whatever_the_sampling(plant: PlantModel) -> None:
    # Half an hour at 0.4 ppm is 0.2 ppm h, read every second, every 10 s, or 10 times a second.
    for period_s in (1.0, 10.0, 0.1):
        n = int(1800 / period_s)
        dose = dose_after(plant, [(0, n // 2, period_s, 0.4), (n // 2 * period_s, n - n // 2, period_s, 0.4)])
        assert dose == pytest.approx(0.2, rel=0.01), period_s
    # A reading below zero is the sensor's offset, not exposure taken back.
    assert dose_after(plant, [(0, 600, 1.0, 0.4), (600, 600, 1.0, -0.4)]) == pytest.approx(0.4 * 600 / 3600, rel=0.01)
    # An hour with no data is a gap, not an hour at the last reading.
    assert dose_after(plant, [(0, 60, 1.0, 0.4), (3660, 60, 1.0, 0.4)]) < 0.4 * 180 / 3600


def test_a_deadband_sensor_doses_its_reading_until_it_moves(plant: PlantModel) -> None:
    document = plant.model_dump(by_alias=True)
    document["classes"]["dry_room"]["sensors"]["h2s"]["deadband"] = 0.05
    reported_on_change = PlantModel.model_validate(document)
    # 0.4 ppm reported once, steady for an hour, then a reading as it moves: a whole hour's dose.
    assert dose_after(reported_on_change, [(0, 1, 1.0, 0.4), (3600, 1, 1.0, 0.1)]) == pytest.approx(0.4, rel=0.01)


def test_a_sensor_read_every_five_minutes_is_charted_on_subgroups_of_a_few_readings(plant: PlantModel) -> None:
    document = plant.model_dump(by_alias=True)
    document["classes"]["precursor_doser"]["sensors"]["li2s_feed"]["sample_period_s"] = 300.0
    slow = PlantModel.model_validate(document)
    engine, unit = AlarmEngine(slow, load_rules(), load_alarm_database()), UnitState()
    rng = np.random.default_rng(8)
    readings = 4 * (engine.rules.spc.baseline_subgroups + 2)  # four readings a subgroup of 20 min
    for i in range(readings):
        engine.on_frame(unit, frame(slow, "S1-DOSE-01", T0 + 300 * i, 1, li2s_feed=52.0 + float(rng.normal(0, 0.5))))
    chart = unit.charts["li2s_feed"]
    assert chart.center is not None and chart.sigma is not None
    assert abs(chart.center - 52.0) < 0.5 and 0 < chart.sigma < 0.6
    events = []
    for i in range(readings, readings + 12):  # a shift of 3 g/min, 6 readings' sigma: inside the spec limits
        events += engine.on_frame(unit, frame(slow, "S1-DOSE-01", T0 + 300 * i, 1, li2s_feed=55.0))
    assert [event.alarm_id for event in raises(events)] == ["S1-DOSE-01/li2s_feed/spc"]


def test_a_subgroup_cut_short_by_a_stop_is_judged_on_its_few_readings(plant: PlantModel, engine: AlarmEngine) -> None:
    rng, unit, subgroup = np.random.default_rng(5), UnitState(), engine.rules.spc.subgroup_s
    t = T0 - T0 % subgroup
    for _ in range(engine.rules.spc.baseline_subgroups + 1):  # 30 frames of 10 readings a subgroup
        for _ in range(int(subgroup) // 10):
            engine.on_frame(unit, frame(plant, "S1-DOSE-01", t, 10, li2s_feed=52.0 + float(rng.normal(0, 0.5))))
            t += 10
    chart = unit.charts["li2s_feed"]
    assert chart.center is not None and chart.sigma is not None and chart.sigma < 0.2
    # A stop, and a start-up that settles 3 s before the subgroup ends: 3 readings 1.5 readings' sigma high.
    events = engine.on_frame(unit, frame(plant, "S1-DOSE-01", t, 10, state="idle"))
    settle = plant.classes["precursor_doser"].settle_s
    start = t + 2 * subgroup - settle - 3
    events += engine.on_frame(unit, frame(plant, "S1-DOSE-01", start, int(settle) + 3, li2s_feed=chart.center + 0.75))
    events += engine.on_frame(unit, frame(plant, "S1-DOSE-01", start + settle + 3, 10, li2s_feed=chart.center))
    [short] = chart.points  # the subgroup open at the stop was dropped, as a stop does
    assert 1.5 < short < 3.0  # judged as a mean of 3 readings, not of 300
    assert not [event for event in raises(events) if event.condition == "spc_rule"]


def test_a_running_unit_that_stops_sending_raises_no_data_at_times_of_its_own_clock_and_its_next_frame_clears_it(
    plant: PlantModel, engine: AlarmEngine
) -> None:
    unit, ref = UnitState(), plant.equipment_by_id["S1-DRY-01"].ref
    assert engine.silent_after(unit, "dry_room") is None  # no frame spacing seen yet
    for k in range(5):  # frames of 2 s, 2 s apart
        engine.on_frame(unit, frame(plant, "S1-DRY-01", T0 + 2 * k, 2))
    last = T0 + 9
    # 3 spacings of 2 s, then the rule's 30 s on-delay.
    assert engine.silent_after(unit, "dry_room") == 36.0
    assert engine.on_silence(unit, ref, last + 20) == []  # checked early: nothing, and nothing kept
    [raised] = raises(engine.on_silence(unit, ref, last + 41))
    assert raised.alarm_id == "S1-DRY-01/no_data" and raised.condition == "no_data"
    assert raised.ts == datetime.fromtimestamp(last + 36, UTC)  # not the check's time: a repeat has the same id
    assert raised.priority == "high" and raised.rationalization == "dry-room-no-data"  # severe, 10 min to respond
    assert "no data for 36 s" in raised.message
    assert not raises(engine.on_silence(unit, ref, last + 50))  # up already
    again = UnitState()
    for k in range(5):
        engine.on_frame(again, frame(plant, "S1-DRY-01", T0 + 2 * k, 2))
    assert [e.event_id for e in engine.on_silence(again, ref, last + 90)] == [raised.event_id]
    events = engine.on_frame(unit, frame(plant, "S1-DRY-01", last + 60, 2))
    assert [(e.alarm_id, e.state, e.cause) for e in events] == [
        ("S1-DRY-01/no_data", "rtn_unacknowledged", "condition cleared")
    ]
    # One spacing of 52 s in the last five does not make the next wait longer: a median of them.
    assert engine.silent_after(unit, "dry_room") == 36.0


def test_a_stopped_unit_is_not_watched_for_silence(plant: PlantModel, engine: AlarmEngine) -> None:
    unit, ref = UnitState(), plant.equipment_by_id["S1-MILL-01"].ref
    for k in range(5):
        engine.on_frame(unit, frame(plant, "S1-MILL-01", T0 + 2 * k, 2, state="idle"))
    assert engine.silent_after(unit, "planetary_mill") is None
    assert engine.on_silence(unit, ref, T0 + 3600) == []
