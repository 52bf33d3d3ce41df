"""From telemetry, anomaly scores and operator actions to alarm lifecycle events, one unit at a time.

`UnitState` is everything the alerter remembers about one equipment unit (its alarms, SPC charts and lot
exposure); it is what the service keeps in its faust table, keyed by equipment id. `AlarmEngine` is pure:
given a state and an input it updates the state and returns the events, so the service, the offline
drill and the tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import msgspec
import numpy as np

from alerter.lifecycle import Alarm, State, Transition, limit_condition
from alerter.rules import Rules
from alerter.spc import RULES as SPC_RULES
from alerter.spc import Chart, violated
from linewatch.contract import (
    ALARM_SCHEMA_VERSION,
    AlarmAction,
    AlarmCondition,
    AlarmEvent,
    AnomalyScores,
    EquipmentRef,
    TelemetryFrame,
    equipment_fields,
)
from linewatch.lineprotocol import to_ns
from linewatch.plant import PlantModel


class AlarmRecord(msgspec.Struct):
    alarm: Alarm
    condition: AlarmCondition
    sensor: str | None = None
    message: str = ""
    value: float | None = None
    limit: float | None = None
    lots: list[str] = []
    raised_at: float | None = None  # when it last annunciated, for escalation
    escalated: bool = False


class Exposure(msgspec.Struct):
    lot: str | None = None
    dose: float = 0.0


class UnitState(msgspec.Struct):
    alarms: dict[str, AlarmRecord] = {}
    charts: dict[str, Chart] = {}
    exposure: dict[str, Exposure] = {}
    running: bool = False
    recipe: str | None = None
    settled_from: float = 0.0  # start-up or recipe change + settle time
    last_ts: float = 0.0
    applied: dict[str, int] = {}  # "topic:partition" -> last offset applied: a redelivery is skipped


state_encoder = msgspec.json.Encoder()
state_decoder = msgspec.json.Decoder(UnitState)


class UnknownAlarm(LookupError):
    pass


class ActionNotApplicable(ValueError):
    pass


@dataclass(frozen=True)
class SpecLimit:
    sensor: str
    unit: str
    low: float | None
    high: float | None
    deadband: float


@dataclass(frozen=True)
class ClassRules:
    settle_s: float
    limits: list[SpecLimit]
    charted: dict[str, str | None]  # critical sensor -> the setpoint it tracks
    exposure: dict[str, tuple[float, str]]  # sensor -> (limit per lot, unit)


class AlarmEngine:
    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        self.plant = plant
        self.rules = rules
        self.classes: dict[str, ClassRules] = {}
        for name, spec in plant.classes.items():
            limits = [
                SpecLimit(
                    sensor,
                    s.unit,
                    s.spec[0],
                    s.spec[1],
                    rules.spec_deadband_fraction * (s.normal[1] - s.normal[0]),
                )
                for sensor, s in spec.sensors.items()
                if s.spec[0] is not None or s.spec[1] is not None
            ]
            charted = {sensor: s.tracks for sensor, s in spec.sensors.items() if s.critical}
            exposure = {sensor: (e.limit, e.unit) for sensor, e in rules.exposure.get(name, {}).items()}
            self.classes[name] = ClassRules(spec.settle_s, limits, charted, exposure)

    # -- inputs ---------------------------------------------------------------------------------------------
    def on_frame(self, unit: UnitState, frame: TelemetryFrame) -> list[AlarmEvent]:
        rules = self.classes[frame.equipment_class]
        ts = np.array([s.ts.timestamp() for s in frame.samples])
        running = frame.state == "running"
        if running and (not unit.running or frame.recipe != unit.recipe):
            unit.settled_from = float(ts[0]) + rules.settle_s
            for chart in unit.charts.values():
                chart.restart() if frame.recipe != unit.recipe else chart.interrupt()
        unit.running, unit.recipe = running, frame.recipe
        judged = (ts >= unit.settled_from) if running else np.zeros(len(ts), dtype=bool)
        columns = {
            name: np.array([s.values.get(name, math.nan) for s in frame.samples])
            for name in self.plant.classes[frame.equipment_class].sensors
        }
        lots = [frame.lot_id] if frame.lot_id else []
        out = _Events(frame, lots)
        touched: set[str] = set()
        for limit in rules.limits:
            touched |= self._spec(unit, out, limit, ts, judged, columns[limit.sensor])
        for sensor, tracks in rules.charted.items():
            touched |= self._spc(unit, out, sensor, tracks, ts, judged, columns)
        for sensor, (dose_limit, dose_unit) in rules.exposure.items():
            touched |= self._exposure(unit, out, sensor, dose_limit, dose_unit, frame, columns[sensor])
        now = float(ts[-1])
        for alarm_id, record in unit.alarms.items():
            if alarm_id in touched or record.condition == "exposure_dose":
                continue
            if record.condition == "anomaly" and judged[-1]:
                continue  # while the unit runs, the scores carry the evidence
            # No fresh evidence for this alarm in the frame: only the equipment state moves it. An anomaly
            # ends with the run that showed it; a limit or SPC condition holds until readings say otherwise.
            condition = record.alarm.raw and record.condition != "anomaly"
            out.add(record, record.alarm.observe(now, condition, bool(judged[-1])))
        unit.last_ts = max(unit.last_ts, now)
        return self._finish(unit, out, now)

    def on_scores(self, unit: UnitState, scores: AnomalyScores) -> list[AlarmEvent]:
        if scores.role != "active":
            return []  # shadow models are compared offline, they never alarm
        alarm_id = f"{scores.equipment_id}/anomaly"
        record = unit.alarms.get(alarm_id)
        if record is None and not any(s.anomalous for s in scores.samples):
            return []
        lots = [scores.lot_id] if scores.lot_id else []
        out = _Events(scores, lots)
        record = record or self._record(unit, alarm_id, "anomaly", None)
        for sample in scores.samples:
            if sample.anomalous and not record.alarm.active:
                record.value, record.limit = sample.score, 1.0
                record.message = (
                    f"anomaly score {sample.score:.2f} (threshold 1.0); top: {', '.join(sample.top_sensors)}"
                )
            out.add(record, record.alarm.observe(sample.ts.timestamp(), sample.anomalous, unit.running), lots)
        now = scores.samples[-1].ts.timestamp()
        unit.last_ts = max(unit.last_ts, now)
        return self._finish(unit, out, now)

    def on_action(self, unit: UnitState, ref: EquipmentRef, action: AlarmAction) -> list[AlarmEvent]:
        record = unit.alarms.get(action.alarm_id)
        if record is None:
            raise UnknownAlarm(f"no alarm {action.alarm_id} on {action.equipment_id}")
        ts = action.requested_at.timestamp()
        alarm = record.alarm
        transitions = alarm.act(action.action, ts, action.user, action.comment, action.duration_s)
        if not transitions:
            raise ActionNotApplicable(f"{action.action} does not apply to {action.alarm_id} in state {alarm.state}")
        out = _Events(ref, record.lots)
        out.add(record, transitions)
        return self._finish(unit, out, max(unit.last_ts, ts))

    # -- conditions -----------------------------------------------------------------------------------------
    def _spec(
        self, unit: UnitState, out: _Events, limit: SpecLimit, ts: np.ndarray, judged: np.ndarray, values: np.ndarray
    ) -> set[str]:
        touched = set()
        for high, bound in ((True, limit.high), (False, limit.low)):
            if bound is None:
                continue
            alarm_id = f"{out.ref.equipment_id}/{limit.sensor}/spec_{'high' if high else 'low'}"
            record = unit.alarms.get(alarm_id)
            beyond = (values > bound) if high else (values < bound)
            if record is None and not (beyond & judged).any():
                continue
            record = record or self._record(unit, alarm_id, "spec_limit", limit.sensor)
            for i in np.flatnonzero(~np.isnan(values)):
                value = float(values[i])
                # While the unit is not judged (idle, settling) the condition holds: no evidence either way.
                condition = (
                    limit_condition(value, bound, high, limit.deadband, record.alarm.active)
                    if judged[i]
                    else record.alarm.raw
                )
                if condition and not record.alarm.active:
                    side = "above upper" if high else "below lower"
                    record.value, record.limit = value, bound
                    record.message = f"{limit.sensor} {value:.4g} {limit.unit} {side} spec limit {bound:g}"
                out.add(record, record.alarm.observe(float(ts[i]), bool(condition), bool(judged[i])))
            touched.add(alarm_id)
        return touched

    def _spc(
        self,
        unit: UnitState,
        out: _Events,
        sensor: str,
        tracks: str | None,
        ts: np.ndarray,
        judged: np.ndarray,
        columns: dict[str, np.ndarray],
    ) -> set[str]:
        spc = self.rules.spc
        values = columns[sensor]
        usable = judged & ~np.isnan(values)
        if tracks is not None:
            setpoint = columns[tracks]
            values = values - setpoint
            # Chart the control deviation where the setpoint holds still: a ramp's lag is not a process shift.
            steady = np.concatenate([[False], np.diff(setpoint) == 0])
            usable &= steady
        chart = unit.charts.setdefault(sensor, Chart())
        alarm_id = f"{out.ref.equipment_id}/{sensor}/spc"
        for i in np.flatnonzero(usable):
            z = chart.add(float(ts[i]), float(values[i]), spc.subgroup_s, spc.baseline_subgroups)
            if z is None:
                continue
            rule = violated(chart.points, spc.rules)
            record = unit.alarms.get(alarm_id)
            if record is None and rule is None:
                continue
            record = record or self._record(unit, alarm_id, "spc_rule", sensor)
            if rule is not None and not record.alarm.active:
                record.value, record.limit = z, 3.0
                record.message = f"{sensor}: SPC {rule} ({SPC_RULES[rule][0]}), subgroup at {z:+.1f} sigma"
            out.add(record, record.alarm.observe(float(ts[i]), rule is not None, True))
        return {alarm_id} if alarm_id in unit.alarms and usable.any() else set()

    def _exposure(
        self,
        unit: UnitState,
        out: _Events,
        sensor: str,
        limit: float,
        dose_unit: str,
        frame: TelemetryFrame,
        values: np.ndarray,
    ) -> set[str]:
        exposure = unit.exposure.setdefault(sensor, Exposure())
        if frame.lot_id != exposure.lot:
            exposure.lot, exposure.dose = frame.lot_id, 0.0
        exposure.dose += float(np.nansum(values)) * self.plant.sample_period_s / 3600.0
        alarm_id = f"{frame.equipment_id}/{sensor}/exposure"
        record = unit.alarms.get(alarm_id)
        over = exposure.lot is not None and exposure.dose > limit
        if record is None and not over:
            return set()
        record = record or self._record(unit, alarm_id, "exposure_dose", sensor)
        lots = [exposure.lot] if exposure.lot else []
        if over and not record.alarm.active:
            record.value, record.limit = exposure.dose, limit
            record.message = (
                f"lot {exposure.lot}: {sensor} exposure {exposure.dose:.3g} {dose_unit} over limit {limit:g}"
            )
        out.add(record, record.alarm.observe(frame.samples[-1].ts.timestamp(), over, True), lots)
        return {alarm_id}

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _record(self, unit: UnitState, alarm_id: str, condition: AlarmCondition, sensor: str | None) -> AlarmRecord:
        record = AlarmRecord(Alarm(alarm_id, self.rules.settings(condition)), condition, sensor)
        unit.alarms[alarm_id] = record
        return record

    def _finish(self, unit: UnitState, out: _Events, now: float) -> list[AlarmEvent]:
        escalation = self.rules.escalation
        for alarm_id, record in list(unit.alarms.items()):
            alarm = record.alarm
            out.add(record, alarm.tick(now))
            if alarm.state != State.UNACKNOWLEDGED:
                record.raised_at, record.escalated = None, False
            elif record.raised_at is None:
                record.raised_at = now
            elif (
                not record.escalated
                and alarm.settings.priority in escalation.priorities
                and now - record.raised_at >= escalation.after_s
            ):
                record.escalated = True
                out.escalate(record, now, escalation.after_s)
            quiet = not alarm.activations or now - alarm.activations[-1] > alarm.settings.chatter_window_s
            if alarm.state == State.NORMAL and not alarm.raw and not alarm.chattering and quiet:
                del unit.alarms[alarm_id]  # nothing to remember: a new activation starts a fresh record
        return out.events


class _Events:
    """Builds AlarmEvents with stable ids: alarm id, event time in ns, and a counter within that instant."""

    def __init__(self, ref: EquipmentRef, lots: list[str]) -> None:
        self.ref = ref
        self.lots = lots
        self.events: list[AlarmEvent] = []
        self._seen: dict[tuple[str, int], int] = {}

    def add(self, record: AlarmRecord, transitions: Iterable[Transition], lots: list[str] | None = None) -> None:
        for t in transitions:
            for lot in lots if lots is not None else self.lots:
                if lot not in record.lots:
                    record.lots = [*record.lots[-9:], lot]
            self._append(record, t.ts, "transition", t.previous, t.state, t.cause, t.annunciate, t.user, t.comment)

    def escalate(self, record: AlarmRecord, ts: float, after_s: float) -> None:
        state = record.alarm.state
        self._append(record, ts, "escalation", state, state, f"unacknowledged for {after_s:g} s", True, None, None)

    def _append(
        self,
        record: AlarmRecord,
        ts: float,
        kind: Literal["transition", "escalation"],
        previous: State,
        state: State,
        cause: str,
        annunciate: bool,
        user: str | None,
        comment: str | None,
    ) -> None:
        when = datetime.fromtimestamp(ts, UTC)
        key = (record.alarm.alarm_id, to_ns(when))
        n = self._seen[key] = self._seen.get(key, -1) + 1
        self.events.append(
            AlarmEvent(
                **equipment_fields(self.ref),
                schema_version=ALARM_SCHEMA_VERSION,
                event_id=f"{key[0]}@{key[1]}#{n}",
                alarm_id=record.alarm.alarm_id,
                ts=when,
                kind=kind,
                condition=record.condition,
                sensor=record.sensor,
                previous=previous.value,
                state=state.value,
                cause=cause,
                priority=record.alarm.settings.priority.value,
                annunciate=annunciate,
                message=record.message or record.alarm.alarm_id,
                value=record.value,
                limit=record.limit,
                lots=record.lots,
                user=user,
                comment=comment,
            )
        )
