"""Every panel's query of every dashboard, variables substituted, returns data from the real InfluxDB after a
simulator run with faults through the whole pipeline (Grafana itself cannot run here)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import faulty_plan, simulate

from linewatch.core.contract import ACTIVE_STATES
from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import KafkaSettings
from linewatch.storage.measurements import SERVICE_STATS
from linewatch.tools.devstack import DevStack, wait_until
from linewatch.tools.drill import pipeline_env, train, wait_quiet
from linewatch.tools.grafana import built
from linewatch.tools.launcher import ServiceProcess

log = logging.getLogger(__name__)
VALUES = {"area": "electrolyte", "line": "syn-1", "equipment": "S1-DRY-01", "sensor": "dew_point"}


def substitute(query: str, time_filter: str) -> str:
    # Grafana picks $__interval from the range and panel width; 10 s gives the rate panels (derivatives of the
    # per-second counters) several buckets even when the pipeline works the run off within a minute.
    query = query.replace("$timeFilter", time_filter).replace("$__interval", "10s")
    for name, value in VALUES.items():
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

    env = pipeline_env(stack, tmp_path)
    train(env, 1.0)  # models to score with; their quality is tested elsewhere
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in PIPELINE]
    try:
        faults = [("moisture_ingress", "S1-DRY-01", 2400), ("h2s_rise", "S1-DRY-01", 5400)]
        plan = faulty_plan(plant, 2, 2.5 * 3600, faults, seed=6, malformed_share=0.01)
        start = int(plan.start_s)
        simulate(plant, kafka.bootstrap_servers, plan)
        wait_quiet(kafka, services, quiet_s=5.0, timeout_s=600.0)
        end = math.ceil(time.time())
        kpi = subprocess.run(
            [sys.executable, "-m", "linewatch.tools.cli", "alarms", "kpi", "--hours", str((end - start) / 3600 + 0.1)],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert kpi.returncode == 0, kpi.stderr
        wait_until(
            "stats in InfluxDB", lambda: bool(series(f'SELECT last("records_in") FROM "{SERVICE_STATS}"')), 30, 1
        )
    finally:
        for service in services:
            service.stop()

    time_filter = f"time >= {start}s AND time <= {end + 60}s"
    ran = []
    for path, document in built():
        for variable in document["templating"]["list"]:
            assert series(substitute(variable["query"], time_filter)), (
                f"{path.stem}: variable {variable['name']} is empty"
            )
        for panel in document["panels"]:
            for target in panel["targets"]:
                query = substitute(target["query"], time_filter)
                found = series(query)
                rows = sum(len(s.get("values", [])) for s in found)
                assert rows > 0, f"{document['title']} / {panel['title']} / {target['refId']}: no data for {query}"
                ran.append(f"{document['title']} / {panel['title']} / {target['refId']}: {rows} rows")
                states = {
                    row[s["columns"].index("state")] for s in found if "state" in s["columns"] for row in s["values"]
                }
                if panel["title"] == "Active alarms":
                    assert states <= ACTIVE_STATES, states  # only what is active, not every alarm's last state
                if panel["title"] == "Alarm states now":
                    assert "normal" not in states, states
        for annotation in document["annotations"]["list"]:
            if "query" in annotation:  # from InfluxDB: there on first start, no Grafana token needed
                marks = sum(len(s["values"]) for s in series(substitute(annotation["query"], time_filter)))
                assert marks > 0, f"{document['title']}: annotation {annotation['name']} is empty"
                ran.append(f"{document['title']} / annotation {annotation['name']}: {marks} marks")
    for line in ran:
        log.info("panel query ran: %s", line)
    annotations = sum("query" in a for _, d in built() for a in d["annotations"]["list"])
    assert len(ran) == sum(len(p["targets"]) for _, d in built() for p in d["panels"]) + annotations
