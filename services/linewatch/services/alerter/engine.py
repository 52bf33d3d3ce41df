"""From telemetry, anomaly scores and operator actions to alarm lifecycle events, one unit at a time.

`AlarmEngine` is pure: given a unit's state (`linewatch.services.alerter.state`) and an input it updates the
state and returns the events, so the service, the offline drill and the tests share it. What raises an alarm
is up to the registered conditions (`linewatch.services.alerter.conditions`); the engine judges when the unit
is running and settled, lets each condition look at the frame, and keeps escalation and clean-up.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from linewatch.core.contract import AlarmAction, AlarmCondition, AlarmEvent, AnomalyScores, EquipmentRef, TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.alerter.conditions import CONDITIONS, Anomaly, FrameContext, NoData
from linewatch.services.alerter.lifecycle import Alarm, Settings, State
from linewatch.services.alerter.rationalization import AlarmDatabase, Phase
from linewatch.services.alerter.rules import Rules
from linewatch.services.alerter.state import AlarmRecord, Events, UnitState


class UnknownAlarm(LookupError):
    pass


class ActionNotApplicable(ValueError):
    pass


class AlarmEngine:
    def __init__(self, plant: PlantModel, rules: Rules, database: AlarmDatabase) -> None:
        self.plant = plant
        self.rules = rules
        self.rationalizer = database.for_plant(plant)
        self.conditions = {name: condition(plant, rules) for name, condition in CONDITIONS.items()}
        anomaly = self.conditions["anomaly"]
        assert isinstance(anomaly, Anomaly)
        self.anomaly = anomaly
        no_data = self.conditions["no_data"]
        assert isinstance(no_data, NoData)
        self.no_data = no_data
        self._no_data_delay: dict[str, float] = {}

    # -- inputs ---------------------------------------------------------------------------------------------
    def on_frame(self, unit: UnitState, frame: TelemetryFrame) -> list[AlarmEvent]:
        spec = self.plant.classes[frame.equipment_class]
        ts = np.array([s.ts.timestamp() for s in frame.samples])
        running = frame.state == "running"
        if running and (not unit.running or frame.recipe != unit.recipe):
            unit.settled_from = float(ts[0]) + spec.settle_s
            unit.settling = Phase.START_UP if not unit.running else Phase.RECIPE_CHANGE
            for chart in unit.charts.values():
                chart.restart() if frame.recipe != unit.recipe else chart.interrupt()
        unit.running, unit.recipe = running, frame.recipe
        judged = (ts >= unit.settled_from) if running else np.zeros(len(ts), dtype=bool)
        # Every equipment state is a phase; a running unit is starting up or changing recipe until settled.
        phases = np.where(judged, Phase.RUNNING.value, unit.settling) if running else np.full(len(ts), frame.state)
        columns = {name: np.array([s.values.get(name, math.nan) for s in frame.samples]) for name in spec.sensors}
        out = Events(frame, [frame.lot_id] if frame.lot_id else [], self.rationalizer)

        def new_record(alarm_id: str, condition: AlarmCondition, sensor: str | None) -> AlarmRecord:
            return self._record(unit, alarm_id, condition, sensor, frame.equipment_class)

        context = FrameContext(unit, frame, ts, judged, phases, columns, out, new_record, self.rationalizer)
        touched: set[str] = set()
        for condition in self.conditions.values():
            touched |= condition.on_frame(context)
        now = float(ts[-1])
        for alarm_id, record in unit.alarms.items():
            if alarm_id in touched:
                continue
            # No fresh evidence for this alarm in the frame: only the equipment state moves it.
            judged_now = bool(context.judged_for(record.condition, record.sensor)[-1])
            held = self.conditions[record.condition].without_evidence(record, judged_now)
            if held is not None:
                out.add(record, record.alarm.observe(now, held, judged_now))
        unit.last_ts = max(unit.last_ts, now)
        return self._finish(unit, out, now)

    def on_scores(self, unit: UnitState, scores: AnomalyScores) -> list[AlarmEvent]:
        if scores.role != "active":
            return []  # shadow models are compared offline, they never alarm
        out = Events(scores, [scores.lot_id] if scores.lot_id else [], self.rationalizer)

        def new_record(alarm_id: str, condition: AlarmCondition, sensor: str | None) -> AlarmRecord:
            return self._record(unit, alarm_id, condition, sensor, scores.equipment_class)

        self.anomaly.on_scores(unit, scores, out, new_record)
        if not out.events and f"{scores.equipment_id}/anomaly" not in unit.alarms:
            return []
        now = scores.samples[-1].ts.timestamp()
        unit.last_ts = max(unit.last_ts, now)
        return self._finish(unit, out, now)

    def silent_after(self, unit: UnitState, equipment_class: str) -> float | None:
        """How long after its last sample the unit's no-data alarm comes up (None: it is not watched now)."""
        overdue = self.no_data.overdue_s(unit)
        return None if overdue is None else overdue + self._no_data_delay_s(equipment_class)

    def _no_data_delay_s(self, equipment_class: str) -> float:
        delay = self._no_data_delay.get(equipment_class)
        if delay is None:  # asked for every unit of every batch: the rationalized delay, once a class
            delay = self._no_data_delay[equipment_class] = self._settings("no_data", equipment_class, None).on_delay_s
        return delay

    def on_silence(self, unit: UnitState, ref: EquipmentRef, now: float) -> list[AlarmEvent]:
        """No frame from the unit for a while: its no-data alarm, and time passing for the alarms it has up
        (escalation, shelving). `now` is on the unit's clock: its last sample time plus the wall time since."""
        record = unit.alarms.get(self.no_data.alarm_id(ref.equipment_id))
        out = Events(ref, record.lots if record else [], self.rationalizer)

        def new_record(alarm_id: str, condition: AlarmCondition, sensor: str | None) -> AlarmRecord:
            return self._record(unit, alarm_id, condition, sensor, ref.equipment_class)

        on_delay_s = self._no_data_delay_s(ref.equipment_class)
        raised_at = self.no_data.on_silence(unit, ref.equipment_id, now, on_delay_s, out, new_record)
        return self._finish(unit, out, now if raised_at is None else raised_at)

    def on_action(self, unit: UnitState, ref: EquipmentRef, action: AlarmAction) -> list[AlarmEvent]:
        record = unit.alarms.get(action.alarm_id)
        if record is None:
            raise UnknownAlarm(f"no alarm {action.alarm_id} on {action.equipment_id}")
        ts = action.requested_at.timestamp()
        alarm = record.alarm
        transitions = alarm.act(action.action, ts, action.user, action.comment, action.duration_s)
        if not transitions:
            raise ActionNotApplicable(f"{action.action} does not apply to {action.alarm_id} in state {alarm.state}")
        out = Events(ref, record.lots, self.rationalizer)
        out.add(record, transitions)
        return self._finish(unit, out, max(unit.last_ts, ts))

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _record(
        self, unit: UnitState, alarm_id: str, condition: AlarmCondition, sensor: str | None, equipment_class: str
    ) -> AlarmRecord:
        record = AlarmRecord(Alarm(alarm_id, self._settings(condition, equipment_class, sensor)), condition, sensor)
        unit.alarms[alarm_id] = record
        return record

    def _settings(self, condition: AlarmCondition, equipment_class: str, sensor: str | None) -> Settings:
        settings = self.rules.settings(condition)
        why = self.rationalizer.lookup(condition, equipment_class, sensor)
        # The rationalization decides the priority (through the matrix) and may tune the delays; an alarm
        # nobody rationalized keeps its condition kind's defaults and is reported as such.
        return replace(
            settings,
            priority=why.priority or settings.priority,
            on_delay_s=settings.on_delay_s if why.on_delay_s is None else why.on_delay_s,
            off_delay_s=settings.off_delay_s if why.off_delay_s is None else why.off_delay_s,
        )

    def _finish(self, unit: UnitState, out: Events, now: float) -> list[AlarmEvent]:
        escalation = self.rules.escalation
        for alarm_id, record in list(unit.alarms.items()):
            alarm = record.alarm
            out.add(record, alarm.tick(now))
            if alarm.state != State.UNACKNOWLEDGED:
                record.raised_at, record.escalated = None, False
            elif record.raised_at is None:
                record.raised_at = now
            elif not record.escalated and alarm.settings.priority in escalation.priorities:
                # Past the alarm's own maximum time to respond nobody has acknowledged it: someone else must know.
                why = self.rationalizer.lookup(record.condition, out.ref.equipment_class, record.sensor)
                after_s = why.respond_within_s or escalation.after_s
                if now - record.raised_at >= after_s:
                    record.escalated = True
                    out.escalate(record, now, after_s)
            quiet = not alarm.activations or now - alarm.activations[-1] > alarm.settings.chatter_window_s
            if alarm.state == State.NORMAL and not alarm.raw and not alarm.chattering and quiet:
                del unit.alarms[alarm_id]  # nothing to remember: a new activation starts a fresh record
        return out.events
