"""Lot exposure dose: a sensor (dry-room H2O, H2S) integrated over the time an electrolyte lot spends there,
against a limit per lot from the rules file; latching, because the lot stays exposed."""

from __future__ import annotations

import numpy as np

from linewatch.core.plant import PlantModel
from linewatch.services.alerter.conditions.base import Condition, FrameContext
from linewatch.services.alerter.rules import Rules
from linewatch.services.alerter.state import AlarmRecord, Exposure


class ExposureDose(Condition):
    name = "exposure_dose"

    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        super().__init__(plant, rules)
        self.limits = {
            name: {s: (e.limit, e.unit) for s, e in by_sensor.items()} for name, by_sensor in rules.exposure.items()
        }

    def watched(self, equipment_class: str) -> list[str | None]:
        return list(self.limits.get(equipment_class, {}))

    def on_frame(self, context: FrameContext) -> set[str]:
        touched: set[str] = set()
        for sensor, (limit, dose_unit) in self.limits.get(context.frame.equipment_class, {}).items():
            touched |= self._dose(context, sensor, limit, dose_unit)
        return touched

    def without_evidence(self, record: AlarmRecord, judged_now: bool) -> bool | None:
        return None  # the dose belongs to the lot, not to the equipment's state

    def _dose(self, context: FrameContext, sensor: str, limit: float, dose_unit: str) -> set[str]:
        frame, unit = context.frame, context.unit
        exposure = unit.exposure.setdefault(sensor, Exposure())
        if frame.lot_id != exposure.lot:
            exposure.lot, exposure.dose = frame.lot_id, 0.0
        exposure.dose += float(np.nansum(context.columns[sensor])) * self.plant.sample_period_s / 3600.0
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
