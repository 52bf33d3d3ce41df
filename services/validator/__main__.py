"""`python -m validator`: build the faust app from typed settings and run one worker."""

from __future__ import annotations

import faust

from linewatch import logs
from linewatch.kafka import ensure_topics, faust_app
from linewatch.plant import load_plant
from validator.agents import SERVICE, build_validator, register
from validator.settings import ValidatorSettings


def main() -> None:
    settings = ValidatorSettings()
    logs.configure(SERVICE, settings.log_level)
    ensure_topics(settings.kafka, settings.kafka.topics.all())
    app = faust_app(SERVICE, settings.kafka)
    register(app, settings, build_validator(settings, load_plant(settings.plant_file)))
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
