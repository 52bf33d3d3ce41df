"""The alerter service on the real broker and influxd: alarms from a faulty run reach Kafka, InfluxDB, the
operator API and the CLI; actions are audited; `linewatch lots affected` names exactly the cells built from
the exposed lot; a SIGKILL mid-run loses no alarm and notifies each at most twice."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import (
    Hook,
    SimulatorThread,
    faulty_plan,
    missing_alarm_events,
    read_quiet,
    reference_alarm_events,
    unthrottled_rules,
)

from linewatch.core.contract import AlarmEvent, alarm_event_decoder, deadletter_decoder, raises_alarm
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.simulator.runner import KafkaPublisher
from linewatch.tools.devstack import DevStack, free_port, wait_until
from linewatch.tools.launcher import ServiceProcess

TOKEN = "test-operator-token"
log = logging.getLogger(__name__)


def alerter_env(stack: DevStack, tmp_path: Path, **extra: str) -> dict[str, str]:
    return (
        stack.service_env()
        | {
            "LINEWATCH_API_PORT": str(free_port()),
            "LINEWATCH_API_TOKENS": json.dumps({"operator": TOKEN}),
            "LINEWATCH_OPERATOR_TOKEN": TOKEN,
            "LINEWATCH_REGISTRY": str(tmp_path / "no-models"),
        }
        | extra
    )


def api(
    env: dict[str, str], method: str, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['LINEWATCH_API_PORT']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_alarms_reach_kafka_influx_api_and_cli_and_lots_affected_is_exact(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    env = alerter_env(stack, tmp_path)
    services = [
        ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "alerter", "writer")
    ]
    try:
        plan = faulty_plan(plant, 3, 4 * 3600, [("h2s_rise", "S1-DRY-01", 3600)], seed=8)  # whole lots, all past
        start = int(plan.start_s)
        thread = SimulatorThread(plant, kafka.bootstrap_servers, plan)
        thread.start()
        manifest = thread.result()
        exposed = f"EL-SYN1-{start // 7200}"
        exposure_id = "S1-DRY-01/h2s/exposure"

        def alarm_rows() -> dict[str, Any]:
            return stack.influxd.query("SELECT * FROM alarm_event GROUP BY alarm_id", stack.database)

        wait_until("the exposure alarm in InfluxDB", lambda: exposure_id in json.dumps(alarm_rows()), 180, 1.0)

        # The API: the OpenAPI document is public, the alarm list needs a token.
        status, document = api(env, "GET", "/openapi.json", token=None)
        assert (
            status == 200 and document["openapi"].startswith("3.") and {"/alarms", "/actions"} <= set(document["paths"])
        )
        assert api(env, "GET", "/alarms", token=None)[0] == 401
        assert api(env, "GET", "/alarms", token="wrong")[0] == 401
        status, active = api(env, "GET", "/alarms")
        assert status == 200
        by_id = {a["alarm_id"]: a for a in active}
        exposure = by_id[exposure_id]
        assert (exposure["priority"], exposure["condition"], exposure["lots"]) == (
            "medium",  # alarms.yaml lot-exposure-dose: major consequence, 30 min to respond
            "exposure_dose",
            [exposed],
        )
        assert exposure["rationalization"] == "lot-exposure-dose" and "conductivity QC" in exposure["corrective_action"]
        assert "S1-DRY-01/h2s/spec_high" in by_id  # the H2S rise also crossed the 1.0 ppm spec limit

        # The CLI: same list; shelving without a reason is refused; acknowledging is audited with the token's user.
        listed = cli(env, "alarms", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert exposure_id in {a["alarm_id"] for a in json.loads(listed.stdout)}
        refused = cli(env, "alarms", "shelve", "S1-DRY-01/h2s/spec_high")
        assert refused.returncode == 1 and "needs a comment" in refused.stdout
        assert api(env, "POST", "/actions", {"alarm_id": "S1-DRY-01/nothing", "action": "acknowledge"})[0] == 404
        ack = cli(env, "alarms", "ack", exposure_id, "-m", "lot quarantined, QC sample taken")
        assert ack.returncode == 0 and "accepted as operator" in ack.stdout, ack.stdout + ack.stderr

        def audited() -> list[AlarmEvent]:
            events = [alarm_event_decoder.decode(v) for v in read_quiet(kafka, kafka.topics.alarms, 0.5)]
            return [e for e in events if e.alarm_id == exposure_id and e.user == "operator"]

        wait_until("the audited acknowledgement", lambda: bool(audited()), 60, 0.5)
        [event] = audited()
        assert event.comment == "lot quarantined, QC sample taken" and event.previous == "unacknowledged"
        assert event.state in ("acknowledged", "normal")  # normal when the lot has changed meanwhile
        # Acknowledging again does not apply: refused up front, nothing sent.
        assert api(env, "POST", "/actions", {"alarm_id": exposure_id, "action": "acknowledge"})[0] in (404, 409)

        # A bad action sent straight to the topic is dead-lettered with the reason, not dropped.
        publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
        publisher.send(kafka.topics.alarm_actions, -1, b"S1-DRY-01", b'{"not": "an action"}')
        publisher.close()
        wait_until(
            "the bad action dead-lettered",
            lambda: any(
                d.stage == "alerter" and d.reason == "invalid_message"
                for d in map(deadletter_decoder.decode, read_quiet(kafka, kafka.topics.deadletter, 0.5))
            ),
            60,
            0.5,
        )

        # Genealogy: exactly the cells built from the exposed lot, by lot and by alarm.
        wait_until(
            "lot events in InfluxDB",
            lambda: "cells_produced" in json.dumps(stack.influxd.query("SELECT * FROM lot_genealogy", stack.database)),
            60,
            0.5,
        )
        expected = sorted(manifest.cells_by_lot[exposed])
        assert len(expected) == plant.cells_per_lot
        for args in (["--lot", exposed], ["--alarm", exposure_id]):
            answer = cli(env, "lots", "affected", *args, "--json")
            assert answer.returncode == 0, answer.stderr
            result = json.loads(answer.stdout)
            assert result["lots"] == [exposed] and result["cells"][exposed] == expected
        # The same through the operator API, for the console.
        assert api(env, "GET", f"/lots/{exposed}/cells") == (200, {"lot": exposed, "cells": expected})
        assert api(env, "GET", "/lots/EL-NOWHERE-1/cells")[0] == 404
        assert api(env, "GET", "/lots/not%20a%20lot/cells")[0] == 400
        assert all(s.alive() for s in services)
    finally:
        for service in services:
            service.stop()


def test_sigkill_of_the_alerter_loses_no_alarm_and_notifies_each_at_most_twice(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = unthrottled_rules(tmp_path)
    env = alerter_env(
        stack,
        tmp_path,
        LINEWATCH_RULES_FILE=str(rules),
        LINEWATCH_NOTIFY__WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/hook",
    )
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "writer")]
    alerter = ServiceProcess("alerter", env, tmp_path / "alerter.log").start()
    try:
        faults = [
            ("mill_overheating", "S1-MILL-01", 1800),
            ("moisture_ingress", "S2-DRY-01", 5400),
            ("h2s_rise", "S1-DRY-01", 9000),
            ("furnace_overshoot", "S2-FURN-01", 11000),
        ]
        simulation = SimulatorThread(
            plant, kafka.bootstrap_servers, faulty_plan(plant, 4, 3.6 * 3600, faults, seed=9, frame_samples=50)
        )
        simulation.start()
        sent = simulation.sent

        def alarm_events() -> list[AlarmEvent]:
            return [alarm_event_decoder.decode(v) for v in read_quiet(kafka, kafka.topics.alarms, 0.3)]

        # Kill as soon as the first alarm is out, while most of the run is still to come.
        wait_until("a first alarm", lambda: any(e.state == "unacknowledged" for e in alarm_events()), 180, 0.2)
        frames_at_kill = len(sent)
        alerter.kill()
        simulation.result()
        alerter = ServiceProcess("alerter", env, tmp_path / "alerter.log").start()

        # The reference: the same engine over exactly the frames that were sent, without a crash.
        reference = reference_alarm_events(plant, sent)
        raised = [e for e in reference if raises_alarm(e.kind, e.state, e.previous)]
        assert len({e.alarm_id for e in raised}) >= 4, [e.alarm_id for e in raised]
        expected = {e.event_id for e in reference}

        def all_out() -> bool:
            return expected <= {e.event_id for e in alarm_events()}

        try:
            wait_until("every reference alarm event on the topic", all_out, 240, 1.0)
        except TimeoutError:
            pytest.fail(
                missing_alarm_events(kafka, reference, alarm_events()) + f"; the alerter's log: {alerter.log_path}"
            )
        counts = Counter(e.event_id for e in alarm_events())
        assert max(counts.values()) <= 2, counts.most_common(3)
        log.info(
            "alerter SIGKILL",
            extra={
                "frames_sent_before_kill": frames_at_kill,
                "frames_total": len(sent),
                "reference_events": len(expected),
                "events_on_topic": sum(counts.values()),
                "duplicated_events": sum(1 for c in counts.values() if c > 1),
                "notifications": len(Hook.received),
            },
        )
        time.sleep(3)
        notified = Counter(Hook.received)
        for event in raised:
            if event.priority in ("medium", "high", "critical") and event.annunciate:  # the routed priorities
                matching = [
                    n
                    for n, c in notified.items()
                    if event.alarm_id in n and event.ts.isoformat() in n
                    for _ in range(c)
                ]
                assert 1 <= len(matching) <= 2, (event.event_id, matching)
        assert alerter.alive() and all(s.alive() for s in services)
    finally:
        hook.shutdown()
        alerter.stop()
        for service in services:
            service.stop()
