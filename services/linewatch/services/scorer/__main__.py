"""`python -m linewatch.services.scorer` (`linewatch service scorer`): the scoring faust worker."""

from __future__ import annotations

from linewatch.core import logs
from linewatch.core.commandline import exit_with
from linewatch.core.health import watch_faust
from linewatch.core.kafka import ensure_topics
from linewatch.core.plant import load_plant
from linewatch.core.streams import faust_app, run_faust_worker
from linewatch.services.scorer.agents import SERVICE, register
from linewatch.services.scorer.learning import learn
from linewatch.services.scorer.rollout import ModelSet
from linewatch.services.scorer.settings import ScorerSettings


def main() -> None:
    settings = ScorerSettings()
    logs.configure(SERVICE, settings.log_level)
    topic_ids = ensure_topics(settings.kafka, settings.kafka.topics.all())
    models = ModelSet(settings.registry, settings.signing_key())
    models.refresh()
    app = faust_app(SERVICE, settings.kafka)
    plant = load_plant(settings.plant_file)
    stats = register(app, settings, plant, models)
    watch_faust(app, SERVICE, settings, stats, topic_ids)

    @app.task  # type: ignore[untyped-decorator]
    async def learning_mode() -> None:
        await learn(settings, plant, stats)

    run_faust_worker(app, settings)


if __name__ == "__main__":
    exit_with(main, f"linewatch service {SERVICE}")
