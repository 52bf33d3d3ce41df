"""Notifications of raised and escalated alarms: Slack-compatible webhooks and email, routed by priority and
area, throttled per route, muted in silent periods."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage

import aiohttp

from linewatch.core.contract import AlarmEvent, raises_alarm
from linewatch.services.alerter.lifecycle import Priority
from linewatch.services.alerter.rules import Notifications, Route
from linewatch.services.alerter.settings import NotifySettings

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    pass


def should_notify(event: AlarmEvent) -> bool:
    """Raised alarms and escalations reach people; every other lifecycle event is recorded only."""
    if not event.annunciate:
        return False
    if event.kind == "escalation":
        return True
    return raises_alarm(event.kind, event.state, event.previous) and event.user is None


def text_of(event: AlarmEvent) -> str:
    head = "ESCALATED " if event.kind == "escalation" else ""
    lots = f" lots: {', '.join(event.lots)}." if event.lots else ""
    text = (
        f"{head}[{event.priority.upper()}] {event.area}/{event.line}/{event.equipment_id}: {event.message} "
        f"({event.cause}, {event.ts.isoformat()}).{lots} Alarm {event.alarm_id}"
    )
    if event.corrective_action:
        # What to do travels with the alarm: the reader should not need the alarm database open.
        text += f". Action: {event.corrective_action}. If nobody acts: {event.consequence}"
        text += f" (respond within {event.respond_within_s:g} s)" if event.respond_within_s else ""
    else:
        text += ". Not rationalized yet"
    return text


@dataclass
class RouteWindow:
    sent: deque[float] = field(default_factory=deque)
    held_back: int = 0


class Notifier:
    def __init__(self, settings: NotifySettings, rules: Notifications) -> None:
        self.settings = settings
        self.rules = rules
        # A route whose channel has no endpoint configured is off (said once here, not failed per alarm).
        webhook = settings.webhook_url.get_secret_value() if settings.webhook_url else ""
        configured = {"webhook": bool(webhook), "email": bool(settings.smtp_host)}
        self.routes = [r for r in rules.routes if configured[r.channel]]
        off = [r.name for r in rules.routes if not configured[r.channel]]
        if off:
            log.warning("notification routes without an endpoint are off", extra={"routes": off})
        self.windows: dict[str, RouteWindow] = {}
        self.sent = 0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, event: AlarmEvent, now: datetime | None = None) -> list[str]:
        """Deliver one event to every matching route; returns the routes that sent. Raises DeliveryFailed
        once the retries of a route are spent (the caller dead-letters the event)."""
        if not self.settings.enabled or not should_notify(event):
            return []
        now = now or datetime.now(UTC)
        priority = Priority(event.priority)
        if any(p.mutes(now.time(), priority) for p in self.rules.silent_periods):
            log.info("silent period: not notified", extra={"alarm_id": event.alarm_id, "event_id": event.event_id})
            return []
        delivered = []
        for route in self.routes:
            if not route.matches(event.priority, event.area):
                continue
            text = self._admit(route, now.timestamp(), text_of(event))
            if text is None:
                continue
            await self._retry(route, text, event)
            delivered.append(route.name)
        return delivered

    def _admit(self, route: Route, now_s: float, text: str) -> str | None:
        """Throttling: over the route's budget, count the message into the next one that goes out."""
        throttle = self.rules.throttle
        window = self.windows.setdefault(route.name, RouteWindow())
        while window.sent and now_s - window.sent[0] > throttle.window_s:
            window.sent.popleft()
        if len(window.sent) >= throttle.max_per_window:
            window.held_back += 1
            log.warning("throttled", extra={"route": route.name, "held_back": window.held_back})
            return None
        window.sent.append(now_s)
        if window.held_back:
            text += f" (+{window.held_back} more alarm(s) held back by throttling; see the alarm list)"
            window.held_back = 0
        return text

    async def _retry(self, route: Route, text: str, event: AlarmEvent) -> None:
        for attempt in range(1, self.settings.attempts + 1):
            try:
                await (self._webhook(text) if route.channel == "webhook" else self._email(route, text, event))
                self.sent += 1
                return
            except (aiohttp.ClientError, OSError, smtplib.SMTPException, TimeoutError) as exc:
                log.warning(
                    "notification failed",
                    extra={"route": route.name, "attempt": attempt, "error": f"{type(exc).__name__}: {exc}"},
                )
                if attempt == self.settings.attempts:
                    raise DeliveryFailed(f"{route.name}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(min(2.0**attempt * 0.25, 10.0))

    async def _webhook(self, text: str) -> None:
        assert self.settings.webhook_url is not None  # routes without one are off
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        async with self._session.post(self.settings.webhook_url.get_secret_value(), json={"text": text}) as response:
            if response.status >= 300:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=await response.text()
                )

    async def _email(self, route: Route, text: str, event: AlarmEvent) -> None:
        settings = self.settings
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(route.to)
        message["Subject"] = f"[linewatch {event.priority}] {event.equipment_id}: {event.message}"[:200]
        message.set_content(text)

        def send() -> None:
            # smtplib in a thread: one short connection per message is plenty at alarm rates.
            with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=settings.timeout_s) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls()
                if settings.smtp_username and settings.smtp_password and settings.smtp_password.get_secret_value():
                    smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
                smtp.send_message(message)

        await asyncio.to_thread(send)
