"""SPC run rules (Western Electric, Nelson) on the critical-to-quality sensors' subgroup means; a sensor that
tracks a setpoint is charted on its control deviation while the setpoint holds still."""

from __future__ import annotations

import numpy as np

from linewatch.core.plant import PlantModel
from linewatch.services.alerter.conditions.base import Condition, FrameContext
from linewatch.services.alerter.rules import Rules
from linewatch.services.alerter.spc import RULES, Chart, violated

SUBGROUP_READINGS = 4


class SpcRule(Condition):
    name = "spc_rule"

    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        super().__init__(plant, rules)
        # class -> critical sensor -> the setpoint it tracks
        self.charted = {
            name: {sensor: s.tracks for sensor, s in spec.sensors.items() if s.critical}
            for name, spec in plant.classes.items()
        }
        # class -> critical sensor -> its subgroups' length: long enough for a few readings, or a sensor read every
        # 5 min would fill no subgroup of the default 5 min and never be charted.
        self.subgroup_s = {
            name: {
                sensor: max(rules.spc.subgroup_s, SUBGROUP_READINGS * plant.period_s(name, sensor))
                for sensor, s in spec.sensors.items()
                if s.critical
            }
            for name, spec in plant.classes.items()
        }

    def watched(self, equipment_class: str) -> list[str | None]:
        return list(self.charted[equipment_class])

    def on_frame(self, context: FrameContext) -> set[str]:
        touched: set[str] = set()
        for sensor, tracks in self.charted[context.frame.equipment_class].items():
            touched |= self._chart(context, sensor, tracks)
        return touched

    def _chart(self, context: FrameContext, sensor: str, tracks: str | None) -> set[str]:
        spc, unit = self.rules.spc, context.unit
        values = context.columns[sensor]
        usable = context.judged & ~np.isnan(values)
        if tracks is not None:
            setpoint = context.columns[tracks]
            with np.errstate(over="ignore"):  # two extreme readings: an infinite deviation, left out by the chart
                values = values - setpoint
            # Chart the control deviation where the setpoint holds still: a ramp's lag is not a process shift.
            steady = np.concatenate([[False], np.diff(setpoint) == 0])
            usable &= steady
        chart = unit.charts.setdefault(sensor, Chart())
        subgroup_s = self.subgroup_s[context.frame.equipment_class][sensor]
        alarm_id = f"{context.frame.equipment_id}/{sensor}/spc"
        for i in np.flatnonzero(usable):
            z = chart.add(float(context.ts[i]), float(values[i]), subgroup_s, spc.baseline_subgroups)
            if z is None:
                continue
            rule = violated(chart.points, spc.rules)
            record = unit.alarms.get(alarm_id)
            if record is None and rule is None:
                continue
            record = record or context.new_record(alarm_id, self.name, sensor)
            if rule is not None and not record.alarm.active:
                record.value, record.limit = z, 3.0
                record.message = f"{sensor}: SPC {rule} ({RULES[rule][0]}), subgroup at {z:+.1f} sigma"
            context.events.add(record, record.alarm.observe(float(context.ts[i]), rule is not None, True))
        return {alarm_id} if alarm_id in unit.alarms and usable.any() else set()
