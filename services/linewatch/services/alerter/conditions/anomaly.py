"""Anomaly: the active model's debounced `anomalous` flag from the scorer; shadow models never alarm."""

from __future__ import annotations

from linewatch.core.contract import AnomalyScores
from linewatch.services.alerter.conditions.base import Condition, NewRecord
from linewatch.services.alerter.state import AlarmRecord, Events, UnitState


class Anomaly(Condition):
    name = "anomaly"

    def watched(self, equipment_class: str) -> list[str | None]:
        return [None]  # one alarm per unit, from its model's score

    def without_evidence(self, record: AlarmRecord, judged_now: bool) -> bool | None:
        # While the unit runs the scores carry the evidence; an anomaly ends with the run that showed it.
        return None if judged_now else False

    def on_scores(self, unit: UnitState, scores: AnomalyScores, events: Events, new_record: NewRecord) -> None:
        alarm_id = f"{scores.equipment_id}/anomaly"
        record = unit.alarms.get(alarm_id)
        if record is None and not any(s.anomalous for s in scores.samples):
            return
        lots = [scores.lot_id] if scores.lot_id else []
        record = record or new_record(alarm_id, self.name, None)
        for sample in scores.samples:
            if sample.anomalous and not record.alarm.active:
                record.value, record.limit = sample.score, 1.0
                record.message = (
                    f"anomaly score {sample.score:.2f} (threshold 1.0); top: {', '.join(sample.top_sensors)}"
                )
            events.add(record, record.alarm.observe(sample.ts.timestamp(), sample.anomalous, unit.running), lots)
