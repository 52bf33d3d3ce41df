"""Notifications against a real SMTP server (aiosmtpd) and a real HTTP receiver; Grafana annotations through
grafana-client against a small server implementing the documented annotation endpoints."""

from __future__ import annotations

import email
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from linewatch.core.contract import AlarmEvent
from linewatch.services.alerter.annotations import Annotator
from linewatch.services.alerter.lifecycle import Priority
from linewatch.services.alerter.notify import DeliveryFailed, Notifier, should_notify
from linewatch.services.alerter.rules import Notifications, Route, SilentPeriod, Throttle
from linewatch.services.alerter.settings import GrafanaSettings, NotifySettings
from linewatch.tools.devstack import free_port

NOON = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def event(priority: str = "high", area: str = "electrolyte", **kw: Any) -> AlarmEvent:
    fields: dict[str, Any] = {
        "schema_version": 1,
        "site": "plant-01",
        "area": area,
        "line": "syn-1",
        "equipment_id": "S1-DRY-01",
        "equipment_class": "dry_room",
        "event_id": f"S1-DRY-01/dew_point/spec_high@{kw.pop('n', 0)}#0",
        "alarm_id": "S1-DRY-01/dew_point/spec_high",
        "ts": NOON,
        "kind": "transition",
        "condition": "spec_limit",
        "sensor": "dew_point",
        "previous": "normal",
        "state": "unacknowledged",
        "cause": "condition active",
        "priority": priority,
        "annunciate": True,
        "message": "dew_point -33.8 degC above upper spec limit -35",
        "lots": ["EL-SYN1-9"],
    } | kw
    return msgspec.convert(fields, AlarmEvent)


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    box = Receiver(f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        if box.fail_with:
            return web.Response(status=box.fail_with)
        box.posts.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield box
    await runner.cleanup()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


ROUTES = [
    Route(name="shift-chat", channel="webhook", priorities=[Priority.HIGH, Priority.CRITICAL]),
    Route(name="cells-chat", channel="webhook", priorities=[Priority.MEDIUM], areas=["cell-assembly"]),
    Route(name="quality-mail", channel="email", priorities=[Priority.CRITICAL], to=["quality@plant.example"]),
]


def notifier(receiver: Receiver, smtp_port: int, **rules: Any) -> Notifier:
    settings = NotifySettings(
        webhook_url=SecretStr(receiver.url), smtp_host="127.0.0.1", smtp_port=smtp_port, attempts=2, timeout_s=5
    )
    return Notifier(settings, Notifications(routes=ROUTES, **rules))


async def test_routed_by_priority_and_area_to_webhook_and_email(receiver: Receiver, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    sender = notifier(receiver, port)
    assert await sender.handle(event("high"), NOON) == ["shift-chat"]
    assert await sender.handle(event("critical", n=1), NOON) == ["shift-chat", "quality-mail"]
    assert await sender.handle(event("medium", n=2), NOON) == []  # medium only for the cell area
    assert await sender.handle(event("medium", area="cell-assembly", n=3), NOON) == ["cells-chat"]
    await sender.close()
    assert len(receiver.posts) == 3
    assert receiver.posts[0]["text"].startswith("[HIGH] electrolyte/syn-1/S1-DRY-01: dew_point")
    assert "EL-SYN1-9" in receiver.posts[0]["text"]
    [(to, body)] = inbox.messages
    assert to == ["quality@plant.example"] and "Subject: [linewatch critical] S1-DRY-01" in body


async def test_only_raised_and_escalated_alarms_are_notified() -> None:
    assert should_notify(event())
    assert should_notify(event(kind="escalation", previous="unacknowledged"))
    assert not should_notify(event(annunciate=False))  # chattering
    assert not should_notify(event(state="acknowledged", previous="unacknowledged", user="alice"))
    assert not should_notify(event(state="rtn_unacknowledged", previous="unacknowledged"))


async def test_throttled_per_route_and_the_held_back_count_reported(
    receiver: Receiver, smtp: tuple[int, Inbox]
) -> None:
    sender = notifier(receiver, smtp[0], throttle=Throttle(max_per_window=2, window_s=600))
    sent = [await sender.handle(event(n=i), NOON + timedelta(seconds=i)) for i in range(4)]
    assert sent == [["shift-chat"], ["shift-chat"], [], []]
    assert await sender.handle(event(n=9), NOON + timedelta(seconds=700)) == ["shift-chat"]
    await sender.close()
    assert len(receiver.posts) == 3 and "+2 more alarm(s) held back" in receiver.posts[-1]["text"]


async def test_silent_period_mutes_below_its_priority(receiver: Receiver, smtp: tuple[int, Inbox]) -> None:
    night = SilentPeriod(start=time(22, 0), end=time(6, 0), min_priority=Priority.CRITICAL)
    sender = notifier(receiver, smtp[0], silent_periods=[night])
    late = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    assert await sender.handle(event("high"), late) == []
    assert await sender.handle(event("critical", n=1), late) == ["shift-chat", "quality-mail"]
    assert await sender.handle(event("high", n=2), NOON) == ["shift-chat"]
    await sender.close()


async def test_disabled_sandbox_sends_nothing(receiver: Receiver, smtp: tuple[int, Inbox]) -> None:
    settings = NotifySettings(
        enabled=False, webhook_url=SecretStr(receiver.url), smtp_host="127.0.0.1", smtp_port=smtp[0]
    )
    sender = Notifier(settings, Notifications(routes=ROUTES))
    assert await sender.handle(event("critical"), NOON) == []
    assert receiver.posts == [] and smtp[1].messages == []


async def test_failing_receiver_raises_after_the_retries(receiver: Receiver, smtp: tuple[int, Inbox]) -> None:
    receiver.fail_with = 503
    sender = notifier(receiver, smtp[0])
    with pytest.raises(DeliveryFailed, match="shift-chat"):
        await sender.handle(event(), NOON)
    await sender.close()


async def test_grafana_annotation_opened_on_raise_and_closed_on_normal() -> None:
    annotations: dict[int, dict[str, Any]] = {}
    seen_auth: list[str] = []

    async def create(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        body = await request.json()
        assert {"time", "timeEnd", "tags", "text"} <= set(body)
        annotations[len(annotations) + 1] = body
        return web.json_response({"message": "Annotation added", "id": len(annotations)})

    async def update(request: web.Request) -> web.Response:
        annotation_id = int(request.match_info["id"])
        if annotation_id not in annotations:
            return web.json_response({"message": "not found"}, status=404)
        annotations[annotation_id] = await request.json()
        return web.json_response({"message": "Annotation updated"})

    app = web.Application()
    app.router.add_post("/api/annotations", create)
    app.router.add_put("/api/annotations/{id}", update)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        annotator = Annotator(GrafanaSettings(url=f"http://127.0.0.1:{port}", token=SecretStr("grafana-token")))
        open_ids: dict[str, tuple[int, int, str]] = {}
        await annotator.handle(event(), open_ids)
        assert list(open_ids) == ["S1-DRY-01/dew_point/spec_high"] and len(annotations) == 1
        await annotator.handle(event(state="acknowledged", previous="unacknowledged", user="alice"), open_ids)
        assert len(annotations) == 1  # the same region, not a new one
        cleared = event(state="normal", previous="acknowledged", ts=NOON + timedelta(minutes=7))
        await annotator.handle(cleared, open_ids)
        assert open_ids == {}
        region = annotations[1]
        start_ms = int(NOON.timestamp() * 1000)
        assert (region["time"], region["timeEnd"]) == (start_ms, start_ms + 7 * 60_000)
        assert {"alarm", "high", "S1-DRY-01"} <= set(region["tags"]) and "dew_point" in region["text"]
        assert seen_auth == ["Bearer grafana-token"]
    finally:
        await runner.cleanup()
    json.dumps(annotations)  # plain JSON all the way


@pytest.mark.alarms
async def test_the_corrective_action_travels_in_webhook_and_email(receiver: Receiver, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    sender = notifier(receiver, port)
    why: dict[str, Any] = {
        "rationalization": "dry-room-moisture",
        "severity": "major",
        "respond_within_s": 600.0,
        "probable_cause": "dryer regeneration fault",
        "consequence": "lots in the room pick up moisture",
        "corrective_action": "check the dryer and the doors",
    }
    assert await sender.handle(event("critical", **why), NOON) == ["shift-chat", "quality-mail"]
    await sender.close()
    said = (
        "Action: check the dryer and the doors. If nobody acts: lots in the room pick up moisture"
        " (respond within 600 s)"
    )
    assert said in receiver.posts[0]["text"]
    [(_, raw)] = inbox.messages
    body = email.message_from_string(raw).get_payload(decode=True)
    assert isinstance(body, bytes) and said in body.decode()
