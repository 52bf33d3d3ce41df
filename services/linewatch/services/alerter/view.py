"""Every alarm of the plant as its events tell it, for the operator API of each alerter worker: a worker's table
holds only the units of its partitions, so `GET /alarms` and the console add what this view knows of the others
(read from the alarms topic, all partitions, by every worker)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from linewatch.core.contract import ACTIVE_STATES, AlarmEvent, alarm_event_decoder, raises_alarm
from linewatch.core.kafka import aiokafka_security, assign_from_start
from linewatch.core.settings import KafkaSettings
from linewatch.services.alerter.state import TRAIL

log = logging.getLogger(__name__)


class AlarmView:
    def __init__(self) -> None:
        self.latest: dict[str, AlarmEvent] = {}
        self.trails: dict[str, list[AlarmEvent]] = {}
        self.raised_at: dict[str, datetime] = {}

    def apply(self, event: AlarmEvent) -> None:
        if event.kind == "transition":
            trail = self.trails.setdefault(event.alarm_id, [])
            trail[:] = [*trail[-(TRAIL - 1) :], event]
        if raises_alarm(event.kind, event.state, event.previous):
            self.raised_at[event.alarm_id] = event.ts
        known = self.latest.get(event.alarm_id)
        if known is None or event.ts >= known.ts:
            self.latest[event.alarm_id] = event

    def rows(self) -> dict[str, dict[str, Any]]:
        """alarm id -> the row `GET /alarms` answers, as far as events tell (shelving's end is not in them)."""
        return {alarm_id: self._row(event) for alarm_id, event in self.latest.items()}

    def _row(self, event: AlarmEvent) -> dict[str, Any]:
        raised = self.raised_at.get(event.alarm_id)
        return {
            "alarm_id": event.alarm_id,
            "equipment_id": event.equipment_id,
            "area": event.area,
            "line": event.line,
            "condition": event.condition,
            "sensor": event.sensor,
            "state": event.state,
            "priority": event.priority,
            "active": event.state in ACTIVE_STATES,
            "chattering": not event.annunciate,
            "message": event.message,
            "rationalization": event.rationalization,
            "probable_cause": event.probable_cause,
            "consequence": event.consequence,
            "corrective_action": event.corrective_action,
            "respond_within_s": event.respond_within_s,
            "value": event.value,
            "limit": event.limit,
            "lots": event.lots,
            "shelved_until": None,
            "raised_at": raised.isoformat() if raised else None,
            "trail": [
                {"at": e.ts.isoformat(), "state": e.state, "cause": e.cause, "user": e.user, "comment": e.comment}
                for e in self.trails.get(event.alarm_id, [])
            ],
        }


async def follow(view: AlarmView, kafka: KafkaSettings) -> None:
    """Read every partition of the alarms topic from its beginning into the view, for as long as the worker runs
    (no consumer group: every worker reads everything)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        **aiokafka_security(kafka),
    )
    await consumer.start()
    try:
        await assign_from_start(consumer, kafka.topics.alarms, kafka)
        while True:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    try:
                        view.apply(alarm_event_decoder.decode(record.value or b""))
                    except Exception:  # the writer dead-letters bad events; the view just skips them
                        log.warning("alarm event skipped by the view", extra={"offset": record.offset})
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
