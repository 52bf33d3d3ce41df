from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch.core import logs
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.settings import DEFAULT_PLANT_FILE, KafkaSettings
from linewatch.tools.devstack import Broker, DevStack

logs.configure("tests", "INFO")


@pytest.fixture(scope="session")
def plant() -> PlantModel:
    return load_plant(DEFAULT_PLANT_FILE)


@pytest.fixture
def stack() -> Iterator[DevStack]:
    """A fresh broker and influxd per test, on free ports, stopped by PID afterwards."""
    with DevStack() as running:
        yield running


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A broker alone, for tests of faust's own behaviour."""
    running = Broker()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def kafka(stack: DevStack) -> KafkaSettings:
    from linewatch.core.kafka import ensure_topics

    settings = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
    ensure_topics(settings, settings.topics.all())
    return settings


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


def now_s() -> float:
    return float(int(time.time()))
