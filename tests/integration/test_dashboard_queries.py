"""Every panel's query of every dashboard, variables substituted, returns data from the real InfluxDB after a
simulator run with faults through the whole pipeline (Grafana itself cannot run here)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest
from support import faulty_plan, simulate

from linewatch.core.contract import ACTIVE_STATES
from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import KafkaSettings
from linewatch.storage.measurements import ALARM_EVENT, ALARM_KPI, LOT_GENEALOGY, PLANT_SENSOR, SERVICE_STATS
from linewatch.tools.devstack import DevStack, wait_until
from linewatch.tools.drill import pipeline_env, train, wait_quiet
from linewatch.tools.grafana import built
from linewatch.tools.launcher import ServiceProcess

pytestmark = pytest.mark.operators
log = logging.getLogger(__name__)
VALUES = {"area": "electrolyte", "line": "syn-1", "equipment": "S1-DRY-01", "sensor": "dew_point"}


def substitute(query: str, time_filter: str, values: dict[str, str]) -> str:
    # Grafana picks $__interval from the range and panel width; 10 s gives the rate panels (derivatives of the
    # per-second counters) several buckets even when the pipeline works the run off within a minute.
    query = query.replace("$timeFilter", time_filter).replace("$__interval", "10s")
    for name, value in values.items():
        query = query.replace(f"${name}", value)
    return query


def test_every_panel_query_returns_data_after_a_faulty_run(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    def series(query: str) -> list[dict[str, Any]]:
        result = stack.influxd.query(query, stack.database)["results"][0]  # type: ignore[index]
        assert "error" not in result, f"{query}: {result['error']}"
        found: list[dict[str, Any]] = result.get("series", [])
        return found

    env = pipeline_env(stack, tmp_path) | {"LINEWATCH_KPI_INTERVAL_S": "5"}  # the alerter's KPIs, soon
    train(env, 1.0)  # models to score with; their quality is tested elsewhere
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in PIPELINE]
    try:
        faults = [("moisture_ingress", "S1-DRY-01", 2400), ("h2s_rise", "S1-DRY-01", 5400)]
        plan = faulty_plan(plant, 2, 2.5 * 3600, faults, seed=6, malformed_share=0.01)
        start = int(plan.start_s)
        simulate(plant, kafka.bootstrap_servers, plan)
        wait_quiet(kafka, services, quiet_s=5.0, timeout_s=600.0)
        quiet = time.time()
        # Nobody runs `linewatch alarms kpi`: the alerter writes the KPI panels' data on its own schedule.
        wait_until(
            "alarm KPIs written by the alerter after the run",
            lambda: bool(series(f'SELECT last("alarms") FROM "{ALARM_KPI}" WHERE time >= {int(quiet)}s')),
            60,
            1,
        )
        wait_until(
            "stats in InfluxDB", lambda: bool(series(f'SELECT last("records_in") FROM "{SERVICE_STATS}"')), 30, 1
        )
        end = math.ceil(time.time())
    finally:
        for service in services:
            service.stop()

    time_filter = f"time >= {start}s AND time <= {end + 60}s"

    def column(query: str, name: str) -> set[str]:
        return {str(row[s["columns"].index(name)]) for s in series(query) for row in s["values"]}

    # The lot to look at: one an alarm affected and cells were built from.
    alarm_lots = column(f'SELECT "lots" FROM "{ALARM_EVENT}" WHERE "lots" <> \'\' AND {time_filter}', "lots")
    used = column(
        f'SELECT "input_lots" FROM "{LOT_GENEALOGY}" WHERE "kind" = \'cells_produced\' AND {time_filter}', "input_lots"
    )
    affected = {lot for lots in alarm_lots for lot in lots.split(",")} & {
        lot for lots in used for lot in lots.split(",")
    }
    assert affected, f"no lot both affected by an alarm and built into cells: {alarm_lots}, {used}"
    values = VALUES | {"lot": sorted(affected)[0]}
    ran = []
    for path, document in built():
        for variable in document["templating"]["list"]:
            assert series(substitute(variable["query"], time_filter, values)), (
                f"{path.stem}: variable {variable['name']} is empty"
            )
        for panel in document["panels"]:
            for target in panel["targets"]:
                query = substitute(target["query"], time_filter, values)
                found = series(query)
                where = f"{document['title']} / {panel['title']} / {target['refId']}"
                rows = sum(len(s.get("values", [])) for s in found)
                assert rows > 0, f"{where}: no data for {query}"
                ran.append(f"{where}: {rows} rows in {len(found)} series")
                states = {
                    row[s["columns"].index("state")] for s in found if "state" in s["columns"] for row in s["values"]
                }
                if panel["title"] == "Active alarms":
                    assert states <= ACTIVE_STATES, states  # only what is active, not every alarm's last state
                if panel["title"] == "Alarm states now":
                    assert "normal" not in states, states
                if panel["type"] == "state-timeline":  # a row per series: one frame per series, named by its tags
                    assert len(found) >= 2 and all(s.get("tags") for s in found), f"{where}: {len(found)} series"
                if panel["type"] == "bargauge":  # one bar per series, each one value
                    assert all(len(s["values"]) == 1 and s.get("tags") for s in found), f"{where}: {found}"
                if panel["title"].startswith("Services ready"):
                    up = {s["tags"]["service"] for s in found if any(row[1] == 1 for row in s["values"])}
                    assert set(PIPELINE) <= up, f"{where}: ready at some time only {up}"
        for annotation in document["annotations"]["list"]:
            if "query" in annotation:  # from InfluxDB: there on first start, no Grafana token needed
                marks = sum(len(s["values"]) for s in series(substitute(annotation["query"], time_filter, values)))
                assert marks > 0, f"{document['title']}: annotation {annotation['name']} is empty"
                ran.append(f"{document['title']} / annotation {annotation['name']}: {marks} marks")
    for line in ran:
        log.info("panel query ran: %s", line)
    annotations = sum("query" in a for _, d in built() for a in d["annotations"]["list"])
    assert len(ran) == sum(len(p["targets"]) for _, d in built() for p in d["panels"]) + annotations

    # Spec limit lines for every unit's every sensor that has them, whether or not an alarm fired.
    [spec_panel] = [p for _, d in built() for p in d["panels"] if p["title"] == "$sensor with spec limits"]
    [limits] = [t["query"] for t in spec_panel["targets"] if PLANT_SENSOR in t["query"]]
    checked = 0
    for unit in plant.equipment:
        for name, sensor in plant.classes[unit.equipment_class].sensors.items():
            if sensor.spec == (None, None):
                continue
            found = series(substitute(limits, time_filter, values | {"equipment": unit.id, "sensor": name}))
            drawn = {
                c for s in found for row in s["values"] for c, v in zip(s["columns"], row, strict=True) if v is not None
            }
            want = {
                c for c, v in zip(("lower spec limit", "upper spec limit"), sensor.spec, strict=True) if v is not None
            }
            assert want <= drawn, f"{unit.id}/{name}: spec {sensor.spec}, lines {drawn}"
            checked += 1
    assert checked > 100, checked
