"""What the alerter remembers about one equipment unit (`UnitState`: its alarms, SPC charts and lot exposure),
kept by the service in its faust table as JSON, and the builder of alarm events with stable ids."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import msgspec

from linewatch.core.contract import (
    ACTIVE_STATES,
    ALARM_SCHEMA_VERSION,
    AlarmCondition,
    AlarmEvent,
    EquipmentRef,
    equipment_fields,
)
from linewatch.services.alerter.lifecycle import Alarm, State, Transition
from linewatch.services.alerter.rationalization import Rationalizer
from linewatch.services.alerter.spc import Chart
from linewatch.storage.lineprotocol import to_ns


class TrailEntry(msgspec.Struct, array_like=True):
    """One step of an alarm's audit trail: when, into which state, why, who, and what they wrote."""

    ts: float
    state: str
    cause: str
    user: str | None = None
    comment: str | None = None


TRAIL = 20  # audit steps kept with an alarm's state (the whole history is in InfluxDB's alarm_event)


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
    trail: list[TrailEntry] = []


class Exposure(msgspec.Struct):
    lot: str | None = None
    dose: float = 0.0
    # The sensor's last reading and its time: it holds until the next one, which may come in a later frame.
    last_ts: float | None = None
    last_value: float = 0.0


class UnitState(msgspec.Struct):
    alarms: dict[str, AlarmRecord] = {}
    charts: dict[str, Chart] = {}
    exposure: dict[str, Exposure] = {}
    running: bool = False
    recipe: str | None = None
    settled_from: float = 0.0  # start-up or recipe change + settle time
    settling: str = "start_up"  # what the unit settles from: start_up or recipe_change
    last_ts: float = 0.0
    spacings: list[float] = []  # between its last frames' ends: how soon its silence is a no-data alarm
    applied: dict[str, int] = {}  # "topic:partition" -> last offset applied: a redelivery is skipped
    recent_frames: list[int] = []  # fingerprints of the frames applied last: a copy re-published upstream is skipped


state_encoder = msgspec.json.Encoder()
state_decoder = msgspec.json.Decoder(UnitState)


class Events:
    """Builds AlarmEvents with stable ids: alarm id, event time in ns, and a counter within that instant."""

    def __init__(self, ref: EquipmentRef, lots: list[str], rationalizer: Rationalizer) -> None:
        self.ref = ref
        self.rationalizer = rationalizer
        self.lots = lots
        self.events: list[AlarmEvent] = []
        self._seen: dict[tuple[str, int], int] = {}

    def add(self, record: AlarmRecord, transitions: Iterable[Transition], lots: list[str] | None = None) -> None:
        for t in transitions:
            # A lot is affected when the alarm comes up or is still up in it; not by the alarm clearing in it.
            for lot in lots if lots is not None else self.lots:
                if t.state.value in ACTIVE_STATES and lot not in record.lots:
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
        record.trail = [*record.trail[-(TRAIL - 1) :], TrailEntry(ts, state.value, cause, user, comment)]
        key = (record.alarm.alarm_id, to_ns(when))
        n = self._seen[key] = self._seen.get(key, -1) + 1
        why = self.rationalizer.lookup(record.condition, self.ref.equipment_class, record.sensor)
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
                rationalization=why.id,
                severity=why.severity,
                respond_within_s=why.respond_within_s,
                probable_cause=why.cause,
                consequence=why.consequence,
                corrective_action=why.action,
            )
        )
