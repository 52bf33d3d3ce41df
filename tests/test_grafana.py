"""Grafana provisioning: the files are valid Grafana models and in step with their one source
(linewatch.grafana), and every panel's query, variables substituted, returns data from the real InfluxDB after
a simulator run with faults through the whole pipeline."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import faulty_plan, simulate

from linewatch.devstack import DevStack, wait_until
from linewatch.drill import pipeline_env, train, wait_quiet
from linewatch.grafana import DASHBOARD_DIR, DASHBOARDS, DATASOURCE, render
from linewatch.launcher import ServiceProcess
from linewatch.plant import PlantModel
from linewatch.settings import REPO_ROOT, KafkaSettings

log = logging.getLogger(__name__)
PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
VALUES = {"area": "electrolyte", "line": "syn-1", "equipment": "S1-DRY-01", "sensor": "dew_point"}


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in sorted(DASHBOARD_DIR.glob("*.json"))]


def test_dashboard_files_are_the_rendered_definitions() -> None:
    files = {path.stem: document for path, document in dashboards()}
    assert set(files) == {d.uid for d in DASHBOARDS}, "run `linewatch grafana build`"
    for dashboard in DASHBOARDS:
        assert files[dashboard.uid] == render(dashboard), f"{dashboard.uid}: run `linewatch grafana build`"


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_dashboard_is_a_valid_grafana_model(path: Path) -> None:
    document = json.loads(path.read_text())
    assert {"uid", "title", "panels", "templating", "annotations", "schemaVersion", "time"} <= set(document)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", document["uid"])
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    known_variables = {v["name"] for v in document["templating"]["list"]}
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        assert panel["datasource"] == DATASOURCE and panel["targets"]
        for target in panel["targets"]:
            assert target["rawQuery"] and target["datasource"] == DATASOURCE and target["query"].startswith("SELECT")
            used = set(re.findall(r"\$(\w+)", target["query"])) - {"timeFilter", "__interval"}
            assert used <= known_variables, f"{panel['title']}: unknown variables {used - known_variables}"


def test_provisioning_files_are_valid() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yaml").read_text())["datasources"]
    assert source["uid"] == DATASOURCE["uid"] and source["type"] == "influxdb"
    assert (
        source["jsonData"]["dbName"] == "linewatch" and "$INFLUX_TOKEN" in source["secureJsonData"]["httpHeaderValue1"]
    )
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "linewatch.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    [group] = yaml.safe_load((PROVISIONING / "alerting" / "critical-alarms.yaml").read_text())["groups"]
    [rule] = group["rules"]
    refs = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] in refs and refs["A"]["datasourceUid"] == DATASOURCE["uid"]
    assert "'critical'" in refs["A"]["model"]["query"]


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
    train(env, 2.0, tmp_path / "train.log")
    names = ("validator", "scorer", "alerter", "writer")
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in names]
    try:
        faults = [("moisture_ingress", "S1-DRY-01", 2400), ("h2s_rise", "S1-DRY-01", 5400)]
        plan = faulty_plan(plant, 2, 2.5 * 3600, faults, seed=6, malformed_share=0.01)
        start = int(plan.start_s)
        simulate(plant, kafka.bootstrap_servers, plan)
        wait_quiet(kafka, services, quiet_s=5.0, timeout_s=600.0)
        end = math.ceil(time.time())
        kpi = subprocess.run(
            [sys.executable, "-m", "alerter", "alarms", "kpi", "--hours", str((end - start) / 3600 + 0.1)],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert kpi.returncode == 0, kpi.stderr
        wait_until("stats in InfluxDB", lambda: bool(series('SELECT last("messages_in") FROM "service_stats"')), 30, 1)
    finally:
        for service in services:
            service.stop()

    time_filter = f"time >= {start}s AND time <= {end + 60}s"
    ran = []
    for path, document in dashboards():
        for variable in document["templating"]["list"]:
            assert series(substitute(variable["query"], time_filter)), (
                f"{path.stem}: variable {variable['name']} is empty"
            )
        for panel in document["panels"]:
            for target in panel["targets"]:
                query = substitute(target["query"], time_filter)
                rows = sum(len(s.get("values", [])) for s in series(query))
                assert rows > 0, f"{document['title']} / {panel['title']} / {target['refId']}: no data for {query}"
                ran.append(f"{document['title']} / {panel['title']} / {target['refId']}: {rows} rows")
    for line in ran:
        log.info("panel query ran: %s", line)
    assert len(ran) == sum(len(p["targets"]) for _, d in dashboards() for p in d["panels"])
