"""Every InfluxDB measurement linewatch writes, by name, and the InfluxQL form of the contract's rules that
dashboards, drills and reports filter on. Nothing else spells a measurement name."""

from __future__ import annotations

from linewatch.core.contract import ACTIVE_STATES, RAISED_STATE

TELEMETRY = "telemetry"  # one point per sample: tags site, area, line, equipment, equipment_class
ANOMALY = "anomaly"  # one point per scored sample, tag role (active, shadow)
ALARM_EVENT = "alarm_event"  # one point per alarm lifecycle event
ALARM_KPI = "alarm_kpi"  # ISA-18.2 KPIs per area and for the plant
LOT_GENEALOGY = "lot_genealogy"  # lots made and the cells built from them
SERVICE_STATS = "service_stats"  # every service's counters
# The plant model's sensors (unit, normal range, spec limits) per unit, refreshed on the alerter's schedule: what
# dashboards draw as limit lines and offer as each unit's sensors, whether or not an alarm ever fired.
PLANT_SENSOR = "plant_sensor"

# The contract's `raises_alarm` as an InfluxQL condition on alarm_event.
RAISED = f"\"kind\" = 'transition' AND \"state\" = '{RAISED_STATE}' AND \"previous\" <> '{RAISED_STATE}'"
ACTIVE = " OR ".join(f"\"state\" = '{state}'" for state in sorted(ACTIVE_STATES))
