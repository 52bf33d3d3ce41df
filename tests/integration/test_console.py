"""The alarm console in real headless Chromium (Debian's, driven by Playwright; no browser download), against the
real validator and alerter on the real broker: an operator signs in, sees a raised alarm within 2 s of its event
on Kafka, acknowledges it; shelving as an operator is refused (the 403 shown in the page); as a supervisor it works
with a reason; the audit trail shows who, when and why. Screenshots are kept in the test's directory."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from support import frame

from linewatch.core.contract import alarm_event_decoder, encoder, raises_alarm
from linewatch.core.kafka import RecordProducer, TopicReader
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import DevStack, free_port, wait_until
from linewatch.tools.launcher import ServiceProcess

pytestmark = [pytest.mark.operators, pytest.mark.browser]
log = logging.getLogger(__name__)
OPERATOR, SUPERVISOR = "olga-3f9a1c7e55", "sam-8b2d6e0f14"
LOT = "EL-SYN1-77"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def test_operator_and_supervisor_handle_an_alarm_in_the_console(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    users = {"olga": {"token": OPERATOR, "role": "operator"}, "sam": {"token": SUPERVISOR, "role": "supervisor"}}
    env = stack.service_env() | {
        "LINEWATCH_API_PORT": str(port),
        "LINEWATCH_API_TOKENS": json.dumps(users),
        "LINEWATCH_GRAFANA__URL": "http://grafana.example:3000",
        "LINEWATCH_NOTIFY__ENABLED": "false",
    }
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "alerter")]
    dry_room = next(e.id for e in plant.equipment if e.equipment_class == "dry_room")
    alarms = TopicReader(kafka, kafka.topics.alarms)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            url = f"http://127.0.0.1:{port}/console"
            wait_until("the console is served", lambda: _serves(url), 90, 0.5)
            page.goto(url)
            page.fill("#token", OPERATOR)
            page.click("#sign-in button")
            expect(page.locator("#who")).to_have_text("olga (operator)")
            expect(page.locator("#empty")).to_be_visible()

            # The dry room's dew point far above its limit (-35 degC) for a minute: a spec-limit alarm.
            producer = RecordProducer(kafka.bootstrap_servers)
            t0 = time.time() - 90
            genealogy = (
                f'lot_genealogy,kind=cells_produced,lot_id=CB-7 input_lots="{LOT}",cells="C-2,C-1,C-3" {int(t0)}'
            )
            write = urllib.request.Request(
                f"{stack.influxd.url}/write?db={stack.database}&precision=s", genealogy.encode()
            )
            assert urllib.request.urlopen(write, timeout=10).status == 204
            wet = frame(plant, dry_room, t0, 60, lot=LOT, dew_point=-20.0)
            producer.send(kafka.topics.raw, -1, dry_room.encode(), encoder.encode(wet))
            producer.close()
            raised: list[str] = []

            def keep(value: bytes) -> None:
                event = alarm_event_decoder.decode(value)
                if raises_alarm(event.kind, event.state, event.previous) and "dew_point" in event.alarm_id:
                    raised.append(event.alarm_id)

            def raised_yet() -> bool:
                alarms.read(keep, 0.2)
                return bool(raised)

            wait_until("the alarm event on Kafka", raised_yet, 60, 0.05)
            seen_on_kafka = time.monotonic()
            row = page.locator(f'tr[data-alarm-id="{raised[0]}"]')
            expect(row).to_be_visible(timeout=2000)
            latency_s = time.monotonic() - seen_on_kafka
            expect(row.locator("td.priority")).to_contain_text("MEDIUM")  # shape and word, not colour alone
            expect(row.locator("td.raised")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
            page.screenshot(path=str(shots / "1-raised.png"), full_page=True)

            row.get_by_role("button", name="Acknowledge").click()
            expect(row.locator("td.state")).to_have_text("acknowledged", timeout=5000)
            row.get_by_role("button", name="Comment…").click()  # an operator may add a note; the state stays
            page.fill("#remove-reason", "maintenance called for the dryer")
            page.click("#remove-submit")
            expect(page.locator("#banner")).to_contain_text("comment")
            row.get_by_role("button", name="Shelve…").click()
            page.fill("#remove-reason", "dew point sensor swap")
            page.click("#remove-submit")
            expect(page.locator("#banner")).to_contain_text("403 refused")
            expect(page.locator("#banner")).to_contain_text("supervisor")
            page.screenshot(path=str(shots / "2-shelve-refused.png"), full_page=True)

            page.click("#sign-out")
            page.fill("#token", SUPERVISOR)
            page.click("#sign-in button")
            expect(page.locator("#who")).to_have_text("sam (supervisor)")
            row.get_by_role("button", name="Shelve…").click()
            page.fill("#remove-reason", "dew point sensor swap")
            page.fill("#remove-minutes", "30")
            page.click("#remove-submit")
            expect(row.locator("td.state")).to_contain_text("shelved until", timeout=5000)
            row.locator("summary").click()
            trail = row.locator(".trail")
            expect(trail).to_contain_text("acknowledged — olga")
            expect(trail).to_contain_text("acknowledged — olga: maintenance called for the dryer")
            expect(trail).to_contain_text("shelved — sam: dew point sensor swap")
            # The lot the alarm affected, and the cells built from it, from the lot genealogy in InfluxDB.
            expect(row.locator(".cells")).to_contain_text(f"Cells to quarantine from lot {LOT} (3): C-1, C-2, C-3")
            link = row.get_by_role("link", name="Grafana").get_attribute("href") or ""
            page.screenshot(path=str(shots / "3-shelved-with-trail.png"), full_page=True)
            assert OPERATOR not in page.url and SUPERVISOR not in page.url
            browser.close()
    finally:
        alarms.close()
        for service in services:
            service.stop()
    assert latency_s <= 2.0
    assert link.startswith("http://grafana.example:3000/d/linewatch-equipment?") and f"var-equipment={dry_room}" in link
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("validator", "alerter"))
    assert OPERATOR not in logs and SUPERVISOR not in logs
    assert '"operator action denied"' in logs and '"role": "operator"' in logs  # the refusal is audited
    log.info("console figures", extra={"alarm_shown_after_kafka_s": round(latency_s, 2), "screenshots": str(shots)})


def _serves(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False
