"""Grafana provisioning: the files are valid Grafana models and in step with their one source
(linewatch.tools.grafana). tests/integration/test_dashboard_queries.py runs every panel's query."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from linewatch.core.settings import REPO_ROOT
from linewatch.tools.grafana import DASHBOARD_DIR, DASHBOARDS, DATASOURCE, built, render

log = logging.getLogger(__name__)
PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
VALUES = {"area": "electrolyte", "line": "syn-1", "equipment": "S1-DRY-01", "sensor": "dew_point"}


def test_dashboard_files_are_the_rendered_definitions() -> None:
    files = {path.stem: document for path, document in built()}
    rendered = [render(make()) for make in DASHBOARDS]
    assert set(files) == {d["uid"] for d in rendered}, "run `linewatch grafana build`"
    for document in rendered:
        assert files[document["uid"]] == document, f"{document['uid']}: run `linewatch grafana build`"


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
        source["jsonData"]["dbName"] == "linewatch"
        and source["secureJsonData"]["password"] == "$INFLUX_GRAFANA_PASSWORD"
    )
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "linewatch.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    [group] = yaml.safe_load((PROVISIONING / "alerting" / "critical-alarms.yaml").read_text())["groups"]
    [rule] = group["rules"]
    refs = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] in refs and refs["A"]["datasourceUid"] == DATASOURCE["uid"]
    assert "'critical'" in refs["A"]["model"]["query"]


def test_without_a_grafana_token_the_alerter_annotates_nothing_and_dashboards_read_influxdb() -> None:
    from pydantic import SecretStr

    from linewatch.services.alerter.annotations import Annotator
    from linewatch.services.alerter.settings import GrafanaSettings

    # First start: Grafana's URL is known, no service-account token exists yet: no dead letter per alarm event.
    assert not Annotator(GrafanaSettings(url="http://grafana:3000")).enabled
    assert Annotator(GrafanaSettings(url="http://grafana:3000", token=SecretStr("glsa_0123456789abcdef"))).enabled
    for _, document in built():
        queries = [a for a in document["annotations"]["list"] if "query" in a]
        if document["annotations"]["list"]:
            assert queries and all("alarm_event" in a["query"] and "$timeFilter" in a["query"] for a in queries)


def test_panels_say_their_units_draw_thresholds_where_grafana_reads_them_and_link_each_other() -> None:
    for _, document in built():
        assert document["links"][0]["tags"] == ["linewatch"] and document["links"][0]["keepTime"]
        for panel in document["panels"]:
            where = f"{document['title']} / {panel['title']}"
            assert panel["fieldConfig"]["defaults"]["unit"], where
            assert "thresholds" not in panel.get("options", {}), f"{where}: a timeseries ignores options.thresholds"
            formats = {t["resultFormat"] for t in panel["targets"]}
            assert formats == {"table" if panel["type"] == "table" else "time_series"}, f"{where}: frames"
    [score] = [p for _, d in built() for p in d["panels"] if p["title"].startswith("Anomaly score")]
    defaults = score["fieldConfig"]["defaults"]
    assert (
        defaults["thresholds"]["steps"][-1]["value"] == 1.0 and defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    )
