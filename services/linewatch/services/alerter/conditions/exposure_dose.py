"""Lot exposure dose: a sensor (dry-room H2O, H2S) integrated over the time an electrolyte lot spends there,
against a limit per lot from the rules file; latching, because the lot stays exposed.

The integral is over time, not over samples: each reading holds until the next (a zero-order hold), so a sensor
sampled every 10 s, or one a deadband reports only when it moves, doses as much as one read every second.
"""

from __future__ import annotations

import math

import numpy as np

from linewatch.core.plant import PlantModel
from linewatch.services.alerter.conditions.base import Condition, FrameContext
from linewatch.services.alerter.rules import Rules
from linewatch.services.alerter.state import AlarmRecord, Exposure

HOLD_PERIODS = 5.0
MIN_HOLD_S = 60.0


def held_integral(exposure: Exposure, ts: np.ndarray, values: np.ndarray, hold_s: float) -> float:
    """The readings' integral over time (value x seconds) from the last one before them, each held until the next
    for at most `hold_s`; moves the last reading on. A concentration below zero is a sensor's offset: none."""
    read = ~np.isnan(values)
    if not read.any():
        return 0.0
    times, held = ts[read], np.maximum(values[read], 0.0)
    first = times[0] if exposure.last_ts is None else exposure.last_ts
    spans = np.clip(np.diff(times, prepend=first), 0.0, hold_s)  # a late, older frame adds nothing
    dose = float(np.dot(np.concatenate([[exposure.last_value], held[:-1]]), spans))
    if times[-1] >= first:
        exposure.last_ts, exposure.last_value = float(times[-1]), float(held[-1])
    return dose


class ExposureDose(Condition):
    name = "exposure_dose"

    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        super().__init__(plant, rules)
        self.limits = {
            name: {s: (e.limit, e.unit, self._hold_s(name, s)) for s, e in by_sensor.items()}
            for name, by_sensor in rules.exposure.items()
            if name in plant.classes  # the default rules name the reference plant's dry rooms; a plant may have none
        }

    def _hold_s(self, equipment_class: str, sensor: str) -> float:
        """How long a reading holds. A silence longer than a few periods is a gap in the data, not a steady value;
        with a deadband, it is. At least a minute: a plant file that says 1 s of a sensor read every 10 s must not
        halve its dose."""
        if self.plant.classes[equipment_class].sensors[sensor].deadband > 0:
            return math.inf
        return max(HOLD_PERIODS * self.plant.period_s(equipment_class, sensor), MIN_HOLD_S)

    def watched(self, equipment_class: str) -> list[str | None]:
        return list(self.limits.get(equipment_class, {}))

    def on_frame(self, context: FrameContext) -> set[str]:
        touched: set[str] = set()
        for sensor, (limit, dose_unit, hold_s) in self.limits.get(context.frame.equipment_class, {}).items():
            touched |= self._dose(context, sensor, limit, dose_unit, hold_s)
        return touched

    def without_evidence(self, record: AlarmRecord, judged_now: bool) -> bool | None:
        return None  # the dose belongs to the lot, not to the equipment's state

    def _dose(self, context: FrameContext, sensor: str, limit: float, dose_unit: str, hold_s: float) -> set[str]:
        frame, unit = context.frame, context.unit
        exposure = unit.exposure.setdefault(sensor, Exposure())
        if frame.lot_id != exposure.lot:
            exposure.lot, exposure.dose = frame.lot_id, 0.0
        exposure.dose += held_integral(exposure, context.ts, context.columns[sensor], hold_s) / 3600.0
        alarm_id = f"{frame.equipment_id}/{sensor}/exposure"
        record = unit.alarms.get(alarm_id)
        over = exposure.lot is not None and exposure.dose > limit
        if record is None and not over:
            return set()
        record = record or context.new_record(alarm_id, self.name, sensor)
        lots = [exposure.lot] if exposure.lot else []
        if over and not record.alarm.active:
            record.value, record.limit = exposure.dose, limit
            record.message = (
                f"lot {exposure.lot}: {sensor} exposure {exposure.dose:.3g} {dose_unit} over limit {limit:g}"
            )
        context.events.add(record, record.alarm.observe(frame.samples[-1].ts.timestamp(), over, True), lots)
        return {alarm_id}
