"""`python -m alerter`: the alerter service (faust worker with the operator API), or one of its commands
(alarms, lots)."""

from __future__ import annotations

import sys

from alerter.agents import SERVICE
from alerter.commands import build_parser, run_command
from alerter.settings import AlerterSettings
from linewatch import logs


def main() -> None:
    args = build_parser().parse_args()
    settings = AlerterSettings()
    if args.command not in (None, "run"):
        logs.configure_command(SERVICE, settings.log_level)
        sys.exit(run_command(args, settings))
    logs.configure(SERVICE, settings.log_level)
    import faust
    from aiohttp import web

    from alerter.agents import register
    from alerter.annotations import Annotator
    from alerter.api import build_api
    from alerter.engine import AlarmEngine
    from alerter.notify import Notifier
    from alerter.rules import load_rules
    from linewatch.kafka import ensure_topics, faust_app
    from linewatch.plant import load_plant

    rules = load_rules(settings.rules_file)
    plant = load_plant(settings.plant_file)
    ensure_topics(settings.kafka, settings.kafka.topics.all())
    app = faust_app(SERVICE, settings.kafka)
    alerter = register(
        app,
        settings.kafka.topics,
        settings.kafka.partitions,
        plant,
        AlarmEngine(plant, rules),
        Notifier(settings.notify, rules.notifications),
        Annotator(settings.grafana),
        settings.stats_interval_s,
    )

    @app.task  # type: ignore[untyped-decorator]
    async def serve_api() -> None:
        runner = web.AppRunner(build_api(alerter, settings.api_tokens))
        await runner.setup()
        await web.TCPSite(runner, settings.api_host, settings.api_port).start()

    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
