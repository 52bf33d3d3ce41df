"""`linewatch service validator` (`python -m linewatch.services.validator`): one faust worker from typed settings."""

from __future__ import annotations

from linewatch.core import logs
from linewatch.core.commandline import exit_with
from linewatch.core.health import watch_faust
from linewatch.core.kafka import ensure_topics
from linewatch.core.plant import load_plant
from linewatch.core.streams import faust_app, run_faust_worker
from linewatch.services.validator.agents import SERVICE, build_validator, register
from linewatch.services.validator.settings import ValidatorSettings


def main() -> None:
    settings = ValidatorSettings()
    logs.configure(SERVICE, settings.log_level)
    topic_ids = ensure_topics(settings.kafka, settings.kafka.topics.all())
    app = faust_app(SERVICE, settings.kafka)
    stats = register(app, settings, build_validator(settings, load_plant(settings.plant_file)))
    watch_faust(app, SERVICE, settings, stats, topic_ids)
    run_faust_worker(app, settings)


if __name__ == "__main__":
    exit_with(main, f"linewatch service {SERVICE}")
