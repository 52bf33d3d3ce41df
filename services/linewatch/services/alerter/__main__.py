"""`python -m linewatch.services.alerter` (`linewatch service alerter`): the faust worker with the operator API."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from linewatch.core import logs
from linewatch.core.commandline import exit_with
from linewatch.core.health import watch_faust
from linewatch.core.kafka import ensure_topics
from linewatch.core.plant import load_plant
from linewatch.core.streams import faust_app, run_faust_worker
from linewatch.services.alerter.agents import SERVICE, register
from linewatch.services.alerter.annotations import Annotator
from linewatch.services.alerter.api import build_api
from linewatch.services.alerter.commands import kpi_report, write_lines
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.notify import Notifier
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import load_rules
from linewatch.services.alerter.settings import AlerterSettings
from linewatch.services.alerter.view import follow
from linewatch.storage.lineprotocol import plant_sensor_lines, to_ns

log = logging.getLogger(__name__)


def main() -> None:
    settings = AlerterSettings()
    logs.configure(SERVICE, settings.log_level)
    rules = load_rules(settings.rules_file)
    plant = load_plant(settings.plant_file)
    topic_ids = ensure_topics(settings.kafka, settings.kafka.topics.all())
    app = faust_app(SERVICE, settings.kafka)
    alerter = register(
        app,
        settings.kafka.topics,
        settings.kafka.partitions,
        plant,
        AlarmEngine(plant, rules, load_alarm_database(settings.alarm_database)),
        Notifier(settings.notify, rules.notifications),
        Annotator(settings.grafana),
        settings.stats_interval_s,
    )
    watch_faust(app, SERVICE, settings, alerter.stats, topic_ids)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_alarms() -> None:
        await follow(alerter.view, settings.kafka)

    tls = settings.api_server_tls()  # a certificate that does not load stops the start, not a task later

    @app.task  # type: ignore[untyped-decorator]
    async def serve_api() -> None:
        runner = web.AppRunner(build_api(alerter, settings.api_tokens, settings.grafana.url, settings.influx))
        await runner.setup()
        await web.TCPSite(runner, settings.api_host, settings.api_port, ssl_context=tls).start()

    if settings.kpi_interval_s:

        @app.timer(interval=settings.kpi_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
        async def dashboard_data() -> None:
            """The alarm KPIs and the plant's sensor limits, for the dashboards."""
            end = datetime.now(UTC)
            start = end - timedelta(hours=settings.kpi_window_h)
            try:
                await write_lines(settings.influx, plant_sensor_lines(plant, to_ns(end)))
                # The KPI query's client is blocking: off the loop that handles alarms.
                await asyncio.to_thread(kpi_report, settings.influx, plant, start, end)
            except Exception as exc:  # InfluxDB away: the next round writes them
                log.warning("alarm KPIs not written", extra={"error": f"{type(exc).__name__}: {exc}"})
            else:
                log.info("alarm KPIs and sensor limits written", extra={"window_h": settings.kpi_window_h})

    run_faust_worker(app, settings)


if __name__ == "__main__":
    exit_with(main, f"linewatch service {SERVICE}")
