"""Grafana annotations for alarms through grafana-client: one region per alarm, opened when it is raised and
closed when it returns to normal."""

from __future__ import annotations

import logging
from typing import Any

from linewatch.core.contract import AlarmEvent, becomes_active
from linewatch.services.alerter.settings import GrafanaSettings
from linewatch.storage.lineprotocol import to_ns

log = logging.getLogger(__name__)


def tags_of(event: AlarmEvent) -> list[str]:
    return ["linewatch", "alarm", event.priority, event.condition, event.area, event.line, event.equipment_id]


class Annotator:
    def __init__(self, settings: GrafanaSettings) -> None:
        self.settings = settings
        self._api: Any = None
        if settings.url and settings.token is None:
            # A service-account token cannot exist on Grafana's first start: rather than a dead letter per event,
            # no annotations from here; the dashboards draw alarms from InfluxDB's alarm_event anyway.
            log.warning("Grafana annotations off until LINEWATCH_GRAFANA__TOKEN is set")
        elif settings.url and settings.token is not None:
            from grafana_client.api import AsyncGrafanaApi

            self._api = AsyncGrafanaApi.from_url(settings.url, credential=settings.token.get_secret_value())

    @property
    def enabled(self) -> bool:
        return self._api is not None

    async def handle(self, event: AlarmEvent, open_ids: dict[str, tuple[int, int, str]]) -> None:
        """Open or close this alarm's annotation; `open_ids` maps alarm id -> (annotation id, start ms, text)
        and is kept by the caller (in a table). Raises on Grafana errors."""
        if self._api is None or event.kind != "transition":
            return
        ms = to_ns(event.ts) // 1_000_000
        opened = open_ids.get(event.alarm_id)
        if opened is None and becomes_active(event.kind, event.state, event.previous):
            text = f"{event.message} ({event.priority}, alarm {event.alarm_id})"
            if event.corrective_action:
                text += f". Action: {event.corrective_action}"
            created = await self._api.annotations.add_annotation(
                dashboard_uid=self.settings.dashboard_uid, time_from=ms, time_to=ms, tags=tags_of(event), text=text
            )
            open_ids[event.alarm_id] = (int(created["id"]), ms, text)
        elif opened is not None and event.state == "normal":
            annotation_id, start_ms, text = opened
            # PUT with every field: a PATCH without tags would clear them.
            await self._api.annotations.update_annotation(
                annotation_id, time_from=start_ms, time_to=ms, tags=tags_of(event), text=text
            )
            del open_ids[event.alarm_id]
