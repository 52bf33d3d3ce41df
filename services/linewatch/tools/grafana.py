"""The Grafana dashboards, defined once here and written to deploy/grafana/dashboards/*.json by
`linewatch grafana build` (a test keeps the files and this module in step). Every panel is InfluxQL, so it
serves InfluxDB 1.x, and 2.x/3.x through the DBRP mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linewatch.core.services import PIPELINE
from linewatch.core.settings import REPO_ROOT
from linewatch.storage.measurements import (
    ACTIVE,
    ALARM_EVENT,
    ALARM_KPI,
    ANOMALY,
    LOT_GENEALOGY,
    RAISED,
    SERVICE_STATS,
    TELEMETRY,
)

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "influxdb", "uid": "linewatch-influxdb"}
PLANT_VARS = ("area", "line", "equipment")


@dataclass(frozen=True)
class Panel:
    title: str
    queries: list[str]
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    unit: str = "short"  # Grafana's unit id: every panel says what its numbers are
    options: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None  # a red line (timeseries draw thresholds from fieldConfig, not options)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: list[Panel]
    variables: tuple[str, ...] = ()
    annotations: bool = False


def _variable(name: str) -> dict[str, Any]:
    parent = {"line": "area", "equipment": "line"}.get(name)
    where = f' WHERE "{parent}" =~ /^${parent}$/' if parent else ""
    query = f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "{name}"{where}'
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 1,
        "includeAll": name != "equipment",
        "multi": name != "equipment",
        "current": {},
    }


def _sensor_variable() -> dict[str, Any]:
    query = f'SHOW FIELD KEYS FROM "{TELEMETRY}"'
    return {
        "name": "sensor",
        "label": "sensor",
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "regex": "/^(?!state$|lot_id$|recipe$).*/",
        "refresh": 1,
        "current": {},
    }


def built() -> list[tuple[Path, dict[str, Any]]]:
    """The dashboard files as written by `linewatch grafana build`."""
    return [(path, json.loads(path.read_text())) for path in sorted(DASHBOARD_DIR.glob("*.json"))]


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels, x, y = [], 0, 0
    for index, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        defaults: dict[str, Any] = {"unit": panel.unit}
        if panel.threshold is not None:
            steps = [{"color": "green", "value": None}, {"color": "red", "value": panel.threshold}]
            defaults |= {
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line"}},
            }
        panels.append(
            {
                "id": index,
                "type": panel.kind,
                "title": panel.title,
                "datasource": DATASOURCE,
                "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": panel.options,
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DATASOURCE,
                        "rawQuery": True,
                        "query": q,
                        # Tables want one frame with tags as columns; charts, timelines, bars and stats one frame
                        # per series (a bar gauge over a table frame would draw one bar for every series).
                        "resultFormat": "table" if panel.kind == "table" else "time_series",
                    }
                    for i, q in enumerate(panel.queries)
                ],
            }
        )
        x += panel.width
    variables = [_variable(name) for name in dashboard.variables]
    if "equipment" in dashboard.variables:
        variables.append(_sensor_variable())
    annotations = [
        # From InfluxDB: works on first start, before anyone can make the token the alerter's annotations need.
        {
            "name": "Alarms raised",
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": "red",
            "query": f'SELECT "message", "priority" FROM "{ALARM_EVENT}" WHERE "state" = \'unacknowledged\' '
            "AND \"previous\" <> 'unacknowledged' AND $timeFilter",
            "textColumn": "message",
            "tagsColumn": "priority",
        },
        {
            "name": "Alarm regions (alerter)",
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "iconColor": "orange",
            "target": {"type": "tags", "tags": ["linewatch", "alarm"], "matchAny": False, "limit": 200},
        },
    ]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["linewatch"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": variables},
        # Every linewatch dashboard one click away, at the same time range and with the same area, line, equipment.
        "links": [
            {
                "type": "dashboards",
                "tags": ["linewatch"],
                "asDropdown": True,
                "title": "linewatch dashboards",
                "keepTime": True,
                "includeVars": True,
            }
        ],
        "annotations": {"list": annotations if dashboard.annotations else []},
        "panels": panels,
    }


UNIT = '"area" =~ /^$area$/ AND "line" =~ /^$line$/'
EQUIPMENT = '"equipment" =~ /^$equipment$/'

DASHBOARDS = [
    Dashboard(
        "linewatch-overview",
        "linewatch — plant overview",
        [
            Panel(
                "Alarms raised per 10 min by area",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND "annunciate" = true AND $timeFilter GROUP BY time(10m), "area" fill(0)'
                ],
            ),
            Panel(
                "Alarms raised by priority",
                [f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND $timeFilter GROUP BY "priority"'],
                kind="bargauge",
            ),
            Panel(
                "Active alarms",
                [
                    # Each alarm's last state, then only the active ones (InfluxQL filters a last() in a subquery).
                    f'SELECT "state", "message", "action" FROM (SELECT last("state") AS "state", last("message") AS "message", last("corrective_action") AS "action" FROM "{ALARM_EVENT}" WHERE $timeFilter GROUP BY "alarm_id", "priority", "area") WHERE {ACTIVE} GROUP BY "alarm_id", "priority", "area"'
                ],
                kind="table",
                width=24,
            ),
            Panel(
                "Equipment state by line",
                [
                    f'SELECT last("state") FROM "{TELEMETRY}" WHERE $timeFilter GROUP BY time($__interval), "line", "equipment"'
                ],
                kind="state-timeline",
                width=24,
            ),
            Panel(
                "Scored samples per minute by area",
                [
                    f'SELECT count("score") FROM "{ANOMALY}" WHERE "role" = \'active\' AND $timeFilter GROUP BY time(1m), "area" fill(0)'
                ],
                unit="cpm",
            ),
            Panel(
                "Anomalous samples per minute by area",
                [
                    f'SELECT count("score") FROM "{ANOMALY}" WHERE "role" = \'active\' AND "anomalous" = true AND $timeFilter GROUP BY time(1m), "area" fill(0)'
                ],
                unit="cpm",
            ),
        ],
        variables=("area",),
        annotations=True,
    ),
    Dashboard(
        "linewatch-equipment",
        "linewatch — equipment",
        [
            Panel(
                "$sensor with spec limits",
                [
                    f'SELECT mean("$sensor") FROM "{TELEMETRY}" WHERE {EQUIPMENT} AND $timeFilter GROUP BY time($__interval)',
                    f'SELECT last("value") FROM "{ALARM_EVENT}" WHERE {EQUIPMENT} AND "condition" = \'spec_limit\' AND "sensor" = \'$sensor\' AND $timeFilter GROUP BY time($__interval)',
                    f'SELECT last("limit") AS "spec limit" FROM "{ALARM_EVENT}" WHERE {EQUIPMENT} AND "condition" = \'spec_limit\' AND "sensor" = \'$sensor\' AND $timeFilter GROUP BY time($__interval) fill(previous)',
                ],
                width=24,
            ),
            Panel(
                "Anomaly score (1.0 = threshold)",
                [
                    f'SELECT max("score") AS "score" FROM "{ANOMALY}" WHERE {EQUIPMENT} AND "role" = \'active\' AND $timeFilter GROUP BY time($__interval)'
                ],
                unit="none",
                threshold=1.0,
            ),
            Panel(
                "Detector scores",
                [
                    f'SELECT max("t2") AS "T2", max("spe") AS "SPE", max("drift") AS "drift", max("iforest") AS "iforest", max("univariate") AS "univariate" FROM "{ANOMALY}" WHERE {EQUIPMENT} AND "role" = \'active\' AND $timeFilter GROUP BY time($__interval)'
                ],
                unit="none",
            ),
            Panel(
                "Alarm events",
                [
                    f'SELECT "alarm_id", "state", "cause", "message", "user", "comment" FROM "{ALARM_EVENT}" WHERE {EQUIPMENT} AND $timeFilter'
                ],
                kind="table",
                width=24,
            ),
        ],
        variables=PLANT_VARS,
        annotations=True,
    ),
    Dashboard(
        "linewatch-alarms",
        "linewatch — alarms",
        [
            Panel(
                "Alarm states now",
                [
                    f'SELECT "state", "message", "lots" FROM (SELECT last("state") AS "state", last("message") AS "message", last("lots") AS "lots" FROM "{ALARM_EVENT}" WHERE $timeFilter GROUP BY "alarm_id", "priority", "area") WHERE "state" <> \'normal\' GROUP BY "alarm_id", "priority", "area"'
                ],
                kind="table",
                width=24,
            ),
            Panel(
                "Alarm history",
                [
                    f'SELECT "alarm_id", "previous", "state", "cause", "priority", "message", "user", "comment" FROM "{ALARM_EVENT}" WHERE {UNIT} AND $timeFilter'
                ],
                kind="table",
                width=24,
            ),
            Panel(
                "Alarms per 10 min by area (ISA-18.2 target ≤ 1)",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND "annunciate" = true AND $timeFilter GROUP BY time(10m), "area" fill(0)'
                ],
            ),
            Panel(
                "Alarm KPIs (linewatch alarms kpi)",
                [
                    f'SELECT last("per_10_min") AS "per 10 min", last("peak_10_min") AS "peak 10 min", last("floods") AS "floods" FROM "{ALARM_KPI}" WHERE $timeFilter GROUP BY "area"'
                ],
                kind="table",
            ),
            Panel(
                "Chattering, stale, top-10 share",
                [
                    f'SELECT last("chattering") AS "chattering", last("stale") AS "stale", last("top10_share_pct") AS "top-10 %" FROM "{ALARM_KPI}" WHERE "area" = \'plant\' AND $timeFilter'
                ],
                kind="stat",
            ),
            Panel(
                "Escalations",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE "kind" = \'escalation\' AND $timeFilter GROUP BY time(1h) fill(0)'
                ],
            ),
        ],
        variables=("area", "line"),
        annotations=True,
    ),
    Dashboard(
        "linewatch-lots",
        "linewatch — lot quality",
        [
            Panel(
                "Lot timeline",
                [f'SELECT "lot_id", "input_lots", "cell_count" FROM "{LOT_GENEALOGY}" WHERE $timeFilter'],
                kind="table",
                width=24,
            ),
            Panel(
                "Exposure alarms by lot",
                [
                    f'SELECT "alarm_id", "lots", "value", "limit", "state" FROM "{ALARM_EVENT}" WHERE "condition" = \'exposure_dose\' AND $timeFilter'
                ],
                kind="table",
                width=24,
            ),
            Panel(
                "Dry room dew point and H2S",
                [
                    f'SELECT mean("dew_point") AS "dew point", mean("h2s") AS "H2S" FROM "{TELEMETRY}" WHERE "equipment_class" = \'dry_room\' AND $timeFilter GROUP BY time($__interval), "equipment"'
                ],
            ),
            Panel(
                "Cells built per lot",
                [
                    f'SELECT sum("cell_count") FROM "{LOT_GENEALOGY}" WHERE "kind" = \'cells_produced\' AND $timeFilter GROUP BY "line"'
                ],
                kind="bargauge",
            ),
            Panel(
                "Affected cells (alarms with lots)",
                [
                    f'SELECT "alarm_id", "lots", "message" FROM "{ALARM_EVENT}" WHERE "lots" <> \'\' AND '
                    + RAISED
                    + " AND $timeFilter"
                ],
                kind="table",
                width=24,
            ),
        ],
    ),
    Dashboard(
        "linewatch-pipeline",
        "linewatch — pipeline health",
        [
            Panel(
                "Throughput per stage (samples/s)",
                [
                    f'SELECT non_negative_derivative(last("samples_valid"), 1s) AS "validator", non_negative_derivative(last("samples_scored"), 1s) AS "scorer", non_negative_derivative(last("points_written"), 1s) AS "writer" FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="cps",
            ),
            Panel(
                "Records taken in per stage (a widening gap is consumer lag)",
                [
                    f'SELECT last("{counter}") AS "{service}" FROM "{SERVICE_STATS}" WHERE "service" = \'{service}\' '
                    "AND $timeFilter GROUP BY time($__interval)"
                    for service in PIPELINE
                    for counter in ("records_in",)
                ],
            ),
            Panel(
                "Dead letters per minute by stage",
                [
                    f'SELECT non_negative_derivative(last("dead_letters"), 1m) FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="cpm",
            ),
            Panel(
                "InfluxDB write retries",
                [
                    f'SELECT last("write_retries") FROM "{SERVICE_STATS}" WHERE "service" = \'writer\' AND $timeFilter GROUP BY time($__interval)'
                ],
            ),
            Panel(
                "Peak RSS per service",
                [
                    f'SELECT max("peak_rss_bytes") FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="bytes",
            ),
            Panel(
                "Notifications and alarm events",
                [
                    f'SELECT last("notifications_sent") AS "notifications", last("alarm_events") AS "alarm events" FROM "{SERVICE_STATS}" WHERE "service" = \'alerter\' AND $timeFilter GROUP BY time($__interval)'
                ],
            ),
        ],
    ),
]


def build(directory: Path = DASHBOARD_DIR) -> list[Path]:
    written = []
    for dashboard in DASHBOARDS:
        path = directory / f"{dashboard.uid}.json"
        path.write_text(json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
