"""No data: a running unit whose frames stopped coming (a dead gateway, link, PLC or upstream service). While a
unit speaks, a sensor it declares and does not send is the scorer's data-quality anomaly; when it stops
speaking there is nothing to score, so only time passing can raise this alarm (`AlarmEngine.on_silence`).

A unit is silent once `OVERDUE_SPACINGS` of its own frame spacings have passed with no frame, and the alarm
comes up after the rule's on-delay beyond that. Its times are the unit's own clock (its last sample time plus
the spacings and the delay), so a repeated check gives the same event ids. Its next frame clears it."""

from __future__ import annotations

from datetime import UTC, datetime

from linewatch.services.alerter.conditions.base import Condition, FrameContext, NewRecord
from linewatch.services.alerter.lifecycle import State
from linewatch.services.alerter.state import AlarmRecord, Events, UnitState

OVERDUE_SPACINGS = 3.0
SPACINGS_KEPT = 9  # a median of the last few, so one late frame or an outage does not stretch the next wait


class NoData(Condition):
    name = "no_data"

    def watched(self, equipment_class: str) -> list[str | None]:
        return [None]

    def on_frame(self, context: FrameContext) -> set[str]:
        unit, ts = context.unit, context.ts
        if unit.last_ts > 0 and ts[-1] > unit.last_ts:
            unit.spacings = [*unit.spacings[-(SPACINGS_KEPT - 1) :], float(ts[-1]) - unit.last_ts]
        alarm_id = self.alarm_id(context.frame.equipment_id)
        record = unit.alarms.get(alarm_id)
        if record is None:
            return set()
        context.events.add(record, record.alarm.observe(float(ts[0]), False, True))
        return {alarm_id}

    def without_evidence(self, record: AlarmRecord, judged_now: bool) -> bool | None:
        return None  # a frame always is evidence: on_frame has cleared it

    @staticmethod
    def alarm_id(equipment_id: str) -> str:
        return f"{equipment_id}/no_data"

    @staticmethod
    def overdue_s(unit: UnitState) -> float | None:
        """How long after its last sample a unit is silent; None while it is not running (a stopped unit may
        stop sending) or has not shown its frame spacing yet."""
        if not unit.running or not unit.spacings:
            return None
        return OVERDUE_SPACINGS * sorted(unit.spacings)[len(unit.spacings) // 2]

    def on_silence(
        self, unit: UnitState, equipment_id: str, now: float, on_delay_s: float, events: Events, new_record: NewRecord
    ) -> float | None:
        """Raise the unit's alarm if it is due by `now` and not up already; returns the time it came up."""
        overdue = self.overdue_s(unit)
        alarm_id = self.alarm_id(equipment_id)
        record = unit.alarms.get(alarm_id)
        if overdue is None or (record is not None and record.alarm.state != State.NORMAL):
            return None
        silent_from = unit.last_ts + overdue
        raised_at = silent_from + on_delay_s
        if now < raised_at:
            return None
        record = record or new_record(alarm_id, self.name, None)
        last = datetime.fromtimestamp(unit.last_ts, UTC).isoformat(timespec="seconds")
        record.message = f"no data for {raised_at - unit.last_ts:.0f} s: last sample at {last}"
        events.add(record, record.alarm.observe(silent_from, True, True))
        events.add(record, record.alarm.observe(raised_at, True, True))
        return raised_at
