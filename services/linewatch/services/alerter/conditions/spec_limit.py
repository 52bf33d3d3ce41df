"""Spec limits: each sensor's lower and upper specification limit from the plant model, with a deadband of a
share of its normal range so that a value hovering at the limit does not chatter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linewatch.core.plant import PlantModel
from linewatch.services.alerter.conditions.base import Condition, FrameContext
from linewatch.services.alerter.lifecycle import limit_condition
from linewatch.services.alerter.rules import Rules


@dataclass(frozen=True)
class Limit:
    sensor: str
    unit: str
    low: float | None
    high: float | None
    deadband: float


class SpecLimit(Condition):
    name = "spec_limit"

    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        super().__init__(plant, rules)
        self.limits = {
            name: [
                Limit(sensor, s.unit, s.spec[0], s.spec[1], rules.spec_deadband_fraction * (s.normal[1] - s.normal[0]))
                for sensor, s in spec.sensors.items()
                if s.spec[0] is not None or s.spec[1] is not None
            ]
            for name, spec in plant.classes.items()
        }

    def watched(self, equipment_class: str) -> list[str | None]:
        return [limit.sensor for limit in self.limits[equipment_class]]

    def on_frame(self, context: FrameContext) -> set[str]:
        touched: set[str] = set()
        for limit in self.limits[context.frame.equipment_class]:
            for high, bound in ((True, limit.high), (False, limit.low)):
                if bound is not None:
                    touched |= self._side(context, limit, high, bound)
        return touched

    def _side(self, context: FrameContext, limit: Limit, high: bool, bound: float) -> set[str]:
        values, unit = context.columns[limit.sensor], context.unit
        alarm_id = f"{context.frame.equipment_id}/{limit.sensor}/spec_{'high' if high else 'low'}"
        record = unit.alarms.get(alarm_id)
        beyond = (values > bound) if high else (values < bound)
        # Most frames are within every limit: no alarm to start, whatever is judged.
        if record is None and not beyond.any():
            return set()
        judged = context.judged_for(self.name, limit.sensor)
        if record is None and not (beyond & judged).any():
            return set()
        record = record or context.new_record(alarm_id, self.name, limit.sensor)
        for i in np.flatnonzero(~np.isnan(values)):
            value = float(values[i])
            # Where the alarm is suppressed (idle, settling, ...) the condition holds: no evidence either way.
            condition = (
                limit_condition(value, bound, high, limit.deadband, record.alarm.active)
                if judged[i]
                else record.alarm.raw
            )
            if condition and not record.alarm.active:
                side = "above upper" if high else "below lower"
                record.value, record.limit = value, bound
                record.message = f"{limit.sensor} {value:.4g} {limit.unit} {side} spec limit {bound:g}"
            context.events.add(record, record.alarm.observe(float(context.ts[i]), bool(condition), bool(judged[i])))
        return {alarm_id}
