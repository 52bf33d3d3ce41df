"""The Grafana dashboards, built with Grafana's typed dashboards-as-code library (grafana-foundation-sdk, models of
Grafana 11.6) and written to deploy/grafana/dashboards/*.json by `linewatch grafana build` (a test keeps the files
and this module in step). Every panel is InfluxQL, so it serves InfluxDB 1.x, and 2.x/3.x through the DBRP
mapping; the SDK has no InfluxDB query type, so `InfluxQL` is ours, as the SDK's variants allow."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

from linewatch.core.services import PIPELINE
from linewatch.core.settings import REPO_ROOT
from linewatch.storage.measurements import (
    ACTIVE,
    ALARM_EVENT,
    ALARM_KPI,
    ANOMALY,
    LOT_GENEALOGY,
    PLANT_SENSOR,
    RAISED,
    SERVICE_STATS,
    TELEMETRY,
)

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "influxdb", "uid": "linewatch-influxdb"}
_SOURCE = model.DataSourceRef(type_val=DATASOURCE["type"], uid=DATASOURCE["uid"])
ResultFormat = Literal["table", "time_series"]


class InfluxQL(cogvariants.Dataquery):
    """A raw InfluxQL target, as Grafana's InfluxDB data source stores it."""

    def __init__(self, ref_id: str, query: str, result_format: ResultFormat) -> None:
        self.ref_id, self.query, self.result_format = ref_id, query, result_format

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.query,
            "resultFormat": self.result_format,
        }


Built = TypeVar("Built")


class _Ready(cogbuilder.Builder[Built]):
    """A builder for an object of ours made whole (the SDK's builders take builders)."""

    def __init__(self, built: Built) -> None:
        self._built = built

    def build(self) -> Built:
        return self._built


class InfluxAnnotation(model.AnnotationQuery):
    """An annotation from an InfluxQL query (the SDK's annotation target is the Grafana data source's)."""

    def __init__(self, name: str, query: str, text_column: str, tags_column: str, icon_color: str) -> None:
        super().__init__(name=name, datasource=_SOURCE, enable=True, icon_color=icon_color)
        self.query, self.text_column, self.tags_column = query, text_column, tags_column

    def to_json(self) -> dict[str, object]:
        return super().to_json() | {"query": self.query, "textColumn": self.text_column, "tagsColumn": self.tags_column}


AnyPanel = TypeVar("AnyPanel", timeseries.Panel, table.Panel, bargauge.Panel, stat.Panel, statetimeline.Panel)


def _panel(
    panel: AnyPanel, title: str, queries: list[str], unit: str = "short", width: int = 12, height: int = 8
) -> AnyPanel:
    """Title, data source, the queries, a unit (every panel says what its numbers are) and a size. Tables want one
    frame with tags as columns; charts, timelines, bars and stats one frame per series (a bar gauge over a table
    frame would draw one bar for every series)."""
    result_format: ResultFormat = "table" if isinstance(panel, table.Panel) else "time_series"
    panel.title(title).datasource(_SOURCE).unit(unit).span(width).height(height)
    for index, query in enumerate(queries):
        panel.with_target(_Ready[cogvariants.Dataquery](InfluxQL(chr(ord("A") + index), query, result_format)))
    return panel


def chart(title: str, queries: list[str], unit: str = "short", threshold: float | None = None) -> timeseries.Panel:
    panel = _panel(timeseries.Panel(), title, queries, unit)
    if threshold is not None:  # a timeseries draws thresholds from its field config, as a line only if asked
        steps = [model.Threshold(None, "green"), model.Threshold(threshold, "red")]
        panel.thresholds(board.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
        panel.thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
    return panel


def grid(title: str, queries: list[str], width: int = 24) -> table.Panel:
    return _panel(table.Panel(), title, queries, width=width)


def bars(title: str, queries: list[str]) -> bargauge.Panel:
    return _panel(bargauge.Panel(), title, queries)


def figures(title: str, queries: list[str]) -> stat.Panel:
    return _panel(stat.Panel(), title, queries)


def timeline(title: str, queries: list[str], mappings: list[model.ValueMapping] | None = None) -> statetimeline.Panel:
    panel = _panel(statetimeline.Panel(), title, queries, width=24)
    return panel.mappings(mappings) if mappings else panel


def _variable(name: str, query: str, all_values: bool, regex: str | None = None) -> board.QueryVariable:
    variable = (
        board.QueryVariable(name)
        .label(name)
        .datasource(_SOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .include_all(all_values)
        .multi(all_values)
    )
    return variable.regex(regex) if regex else variable


def _plant_variable(name: str) -> board.QueryVariable:
    parent = {"line": "area", "equipment": "line"}.get(name)
    where = f' WHERE "{parent}" =~ /^${parent}$/' if parent else ""
    return _variable(name, f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "{name}"{where}', name != "equipment")


def _sensor_variable() -> board.QueryVariable:
    """The chosen unit's own sensors, from the plant model the alerter writes (not every class's fields)."""
    query = f'SHOW TAG VALUES FROM "{PLANT_SENSOR}" WITH KEY = "sensor" WHERE "equipment" =~ /^$equipment$/'
    return _variable("sensor", query, False)


def _lot_variable() -> board.QueryVariable:
    query = f'SHOW TAG VALUES FROM "{LOT_GENEALOGY}" WITH KEY = "lot_id" WHERE "kind" = \'electrolyte_lot_made\''
    return _variable("lot", query, False)


def _annotations() -> list[cogbuilder.Builder[model.AnnotationQuery]]:
    raised = (
        f'SELECT "message", "priority" FROM "{ALARM_EVENT}" WHERE "state" = \'unacknowledged\' '
        "AND \"previous\" <> 'unacknowledged' AND $timeFilter"
    )
    return [
        # From InfluxDB: works on first start, before anyone can make the token the alerter's annotations need.
        _Ready[model.AnnotationQuery](InfluxAnnotation("Alarms raised", raised, "message", "priority", "red")),
        board.AnnotationQuery()
        .name("Alarm regions (alerter)")
        .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .icon_color("orange")
        .target(board.AnnotationTarget().type("tags").tags(["linewatch", "alarm"]).match_any(False).limit(200)),
    ]


def _dashboard(
    uid: str,
    title: str,
    panels: list[cogbuilder.Builder[model.Panel]],
    variables: list[board.QueryVariable] | None = None,
    annotations: bool = False,
) -> board.Dashboard:
    built = (
        board.Dashboard(title)
        .uid(uid)
        .tags(["linewatch"])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("utc")
        .variables(list(variables or []))
        # Every linewatch dashboard one click away, at the same time range and with the same area, line, equipment.
        .link(
            board.DashboardLink("linewatch dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["linewatch"])
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(True)
        )
        .annotations(_annotations() if annotations else [])
    )
    for panel in panels:
        built.with_panel(panel)
    return built


def render(dashboard: board.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, panels numbered."""
    document: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    for index, panel in enumerate(document["panels"], start=1):
        panel["id"] = index
    return document


def built() -> list[tuple[Path, dict[str, Any]]]:
    """The dashboard files as written by `linewatch grafana build`."""
    return [(path, json.loads(path.read_text())) for path in sorted(DASHBOARD_DIR.glob("*.json"))]


UNIT = '"area" =~ /^$area$/ AND "line" =~ /^$line$/'
EQUIPMENT = '"equipment" =~ /^$equipment$/'
LOT_IN = "=~ /(^|,)$lot(,|$)/"  # a lot in a comma-separated list of lots
UP_DOWN: list[model.ValueMapping] = [
    model.ValueMap({"0": model.ValueMappingResult("not ready", "red"), "1": model.ValueMappingResult("ready", "green")})
]


def overview() -> board.Dashboard:
    return _dashboard(
        "linewatch-overview",
        "linewatch — plant overview",
        [
            chart(
                "Alarms raised per 10 min by area",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND "annunciate" = true AND $timeFilter GROUP BY time(10m), "area" fill(0)'
                ],
            ),
            bars(
                "Alarms raised by priority",
                [f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND $timeFilter GROUP BY "priority"'],
            ),
            grid(
                "Active alarms",
                [
                    # Each alarm's last state, then only the active ones (InfluxQL filters a last() in a subquery).
                    f'SELECT "state", "message", "action" FROM (SELECT last("state") AS "state", last("message") AS "message", last("corrective_action") AS "action" FROM "{ALARM_EVENT}" WHERE $timeFilter GROUP BY "alarm_id", "priority", "area") WHERE {ACTIVE} GROUP BY "alarm_id", "priority", "area"'
                ],
            ),
            timeline(
                "Equipment state by line",
                [
                    f'SELECT last("state") FROM "{TELEMETRY}" WHERE $timeFilter GROUP BY time($__interval), "line", "equipment"'
                ],
            ),
            chart(
                "Scored samples per minute by area",
                [
                    f'SELECT count("score") FROM "{ANOMALY}" WHERE "role" = \'active\' AND $timeFilter GROUP BY time(1m), "area" fill(0)'
                ],
                unit="cpm",
            ),
            chart(
                "Anomalous samples per minute by area",
                [
                    f'SELECT count("score") FROM "{ANOMALY}" WHERE "role" = \'active\' AND "anomalous" = true AND $timeFilter GROUP BY time(1m), "area" fill(0)'
                ],
                unit="cpm",
            ),
        ],
        [_plant_variable("area")],
        annotations=True,
    )


def equipment() -> board.Dashboard:
    return _dashboard(
        "linewatch-equipment",
        "linewatch — equipment",
        [
            _panel(
                timeseries.Panel(),
                "$sensor with spec limits",
                [
                    f'SELECT mean("$sensor") AS "$sensor" FROM "{TELEMETRY}" WHERE {EQUIPMENT} AND $timeFilter GROUP BY time($__interval)',
                    # From the plant model, for every sensor that has them, whether or not an alarm fired.
                    f'SELECT last("spec_low") AS "lower spec limit", last("spec_high") AS "upper spec limit" FROM "{PLANT_SENSOR}" WHERE {EQUIPMENT} AND "sensor" = \'$sensor\' AND $timeFilter GROUP BY time($__interval) fill(previous)',
                ],
                width=24,
            ),
            chart(
                "Anomaly score (1.0 = threshold)",
                [
                    f'SELECT max("score") AS "score" FROM "{ANOMALY}" WHERE {EQUIPMENT} AND "role" = \'active\' AND $timeFilter GROUP BY time($__interval)'
                ],
                unit="none",
                threshold=1.0,
            ),
            chart(
                "Detector scores",
                [
                    f'SELECT max("t2") AS "T2", max("spe") AS "SPE", max("drift") AS "drift", max("iforest") AS "iforest", max("univariate") AS "univariate" FROM "{ANOMALY}" WHERE {EQUIPMENT} AND "role" = \'active\' AND $timeFilter GROUP BY time($__interval)'
                ],
                unit="none",
            ),
            grid(
                "Alarm events",
                [
                    f'SELECT "alarm_id", "state", "cause", "message", "user", "comment" FROM "{ALARM_EVENT}" WHERE {EQUIPMENT} AND $timeFilter'
                ],
            ),
        ],
        [*map(_plant_variable, ("area", "line", "equipment")), _sensor_variable()],
        annotations=True,
    )


def alarms() -> board.Dashboard:
    return _dashboard(
        "linewatch-alarms",
        "linewatch — alarms",
        [
            grid(
                "Alarm states now",
                [
                    f'SELECT "state", "message", "lots" FROM (SELECT last("state") AS "state", last("message") AS "message", last("lots") AS "lots" FROM "{ALARM_EVENT}" WHERE $timeFilter GROUP BY "alarm_id", "priority", "area") WHERE "state" <> \'normal\' GROUP BY "alarm_id", "priority", "area"'
                ],
            ),
            grid(
                "Alarm history",
                [
                    f'SELECT "alarm_id", "previous", "state", "cause", "priority", "message", "user", "comment" FROM "{ALARM_EVENT}" WHERE {UNIT} AND $timeFilter'
                ],
            ),
            chart(
                "Alarms per 10 min by area (ISA-18.2 target ≤ 1)",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE {RAISED} AND "annunciate" = true AND $timeFilter GROUP BY time(10m), "area" fill(0)'
                ],
            ),
            grid(
                "Alarm KPIs over the last 24 h (the alerter, every 10 min)",
                [
                    f'SELECT last("per_10_min") AS "per 10 min", last("peak_10_min") AS "peak 10 min", last("floods") AS "floods" FROM "{ALARM_KPI}" WHERE $timeFilter GROUP BY "area"'
                ],
                width=12,
            ),
            figures(
                "Chattering, stale, top-10 share",
                [
                    f'SELECT last("chattering") AS "chattering", last("stale") AS "stale", last("top10_share_pct") AS "top-10 %" FROM "{ALARM_KPI}" WHERE "area" = \'plant\' AND $timeFilter'
                ],
            ),
            chart(
                "Escalations",
                [
                    f'SELECT count("event_id") FROM "{ALARM_EVENT}" WHERE "kind" = \'escalation\' AND $timeFilter GROUP BY time(1h) fill(0)'
                ],
            ),
        ],
        [_plant_variable("area"), _plant_variable("line")],
        annotations=True,
    )


def lots() -> board.Dashboard:
    return _dashboard(
        "linewatch-lots",
        "linewatch — lot quality",
        [
            grid(
                "Cells built from lot $lot (to quarantine if it is affected)",
                [
                    f'SELECT "lot_id" AS "cell batch", "line", "cell_count", "cells" FROM "{LOT_GENEALOGY}" WHERE "kind" = \'cells_produced\' AND "input_lots" {LOT_IN} AND $timeFilter'
                ],
            ),
            grid(
                "Alarms that affected lot $lot",
                [
                    f'SELECT "alarm_id", "state", "value", "limit", "message" FROM "{ALARM_EVENT}" WHERE "lots" {LOT_IN} AND $timeFilter'
                ],
            ),
            grid(
                "Lot timeline",
                [f'SELECT "lot_id", "input_lots", "cell_count" FROM "{LOT_GENEALOGY}" WHERE $timeFilter'],
            ),
            chart(
                "Dry room dew point and H2S",
                [
                    f'SELECT mean("dew_point") AS "dew point", mean("h2s") AS "H2S" FROM "{TELEMETRY}" WHERE "equipment_class" = \'dry_room\' AND $timeFilter GROUP BY time($__interval), "equipment"'
                ],
            ),
            bars(
                "Cells built per line",
                [
                    f'SELECT sum("cell_count") FROM "{LOT_GENEALOGY}" WHERE "kind" = \'cells_produced\' AND $timeFilter GROUP BY "line"'
                ],
            ),
            grid(
                "Alarms with affected lots",
                [
                    f'SELECT "alarm_id", "lots", "message" FROM "{ALARM_EVENT}" WHERE "lots" <> \'\' AND '
                    + RAISED
                    + " AND $timeFilter"
                ],
            ),
        ],
        [_lot_variable()],
    )


def pipeline() -> board.Dashboard:
    return _dashboard(
        "linewatch-pipeline",
        "linewatch — pipeline health",
        [
            timeline(
                "Services ready (broker reachable, input worked off; not ready when nothing is heard)",
                [f'SELECT last("ready") FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time(1m), "service" fill(0)'],
                UP_DOWN,
            ),
            chart(
                "Consumer lag: input records waiting per service",
                [
                    f'SELECT max("input_waiting") FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
            ),
            chart(
                "Throughput per stage (samples/s)",
                [
                    f'SELECT non_negative_derivative(last("samples_valid"), 1s) AS "validator", non_negative_derivative(last("samples_scored"), 1s) AS "scorer", non_negative_derivative(last("points_written"), 1s) AS "writer" FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="cps",
            ),
            chart(
                "Records taken in per stage",
                [
                    f'SELECT last("records_in") AS "{service}" FROM "{SERVICE_STATS}" WHERE "service" = \'{service}\' '
                    "AND $timeFilter GROUP BY time($__interval)"
                    for service in PIPELINE
                ],
            ),
            chart(
                "Dead letters per minute by stage",
                [
                    f'SELECT non_negative_derivative(last("dead_letters"), 1m) FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="cpm",
            ),
            chart(
                "InfluxDB write retries",
                [
                    f'SELECT last("write_retries") FROM "{SERVICE_STATS}" WHERE "service" = \'writer\' AND $timeFilter GROUP BY time($__interval)'
                ],
            ),
            chart(
                "Peak RSS per service",
                [
                    f'SELECT max("peak_rss_bytes") FROM "{SERVICE_STATS}" WHERE $timeFilter GROUP BY time($__interval), "service"'
                ],
                unit="bytes",
            ),
            chart(
                "Notifications and alarm events",
                [
                    f'SELECT last("notifications_sent") AS "notifications", last("alarm_events") AS "alarm events" FROM "{SERVICE_STATS}" WHERE "service" = \'alerter\' AND $timeFilter GROUP BY time($__interval)'
                ],
            ),
        ],
    )


DASHBOARDS: list[Callable[[], board.Dashboard]] = [overview, equipment, alarms, lots, pipeline]


def build(directory: Path = DASHBOARD_DIR) -> list[Path]:
    written = []
    for make in DASHBOARDS:
        document = render(make())
        path = directory / f"{document['uid']}.json"
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
