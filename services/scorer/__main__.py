"""`python -m scorer`: the scoring service (faust worker), or one of its commands (train, evaluate, ...)."""

from __future__ import annotations

import sys

from linewatch import logs
from scorer.agents import SERVICE
from scorer.commands import build_parser, run_command
from scorer.settings import ScorerSettings


def main() -> None:
    args = build_parser().parse_args()
    settings = ScorerSettings()
    if args.command not in (None, "run"):
        logs.configure_command(SERVICE, settings.log_level)
        sys.exit(run_command(args, settings))
    logs.configure(SERVICE, settings.log_level)
    import faust

    from linewatch.kafka import ensure_topics, faust_app
    from linewatch.plant import load_plant
    from scorer.agents import register
    from scorer.rollout import ModelSet

    ensure_topics(settings.kafka, settings.kafka.topics.all())
    models = ModelSet(settings.registry, settings.signing_key())
    models.refresh()
    app = faust_app(SERVICE, settings.kafka)
    register(app, settings, load_plant(settings.plant_file), models)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
