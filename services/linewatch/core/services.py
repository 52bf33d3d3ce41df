"""The service registry: every linewatch service, once. The CLI, the launcher, the live view, the dashboards,
drills, what-if runs and the deployment checks read it; a new service is a folder in `linewatch/services`
plus one entry here.

One name everywhere: the folder, the compose service and k8s Deployment, the Kafka consumer group and the
`service` field of its logs and stats.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal, cast

from linewatch.core.settings import CommonSettings

TopicName = Literal["raw", "valid", "deadletter", "stats", "scores", "alarms", "alarm_actions", "lots"]


@dataclass(frozen=True)
class Service:
    name: str
    summary: str
    settings: str  # "module:Class" of its typed settings, relative to the service's package
    inputs: tuple[TopicName, ...]
    outputs: tuple[TopicName, ...]
    # What the live view shows of it: (counter, label); every service also counts `records_in.<topic>`.
    shown: tuple[tuple[str, str], ...] = ()
    # Started by `linewatch up`, drills and what-if runs; the simulator feeds them instead.
    pipeline: bool = True

    @property
    def module(self) -> str:
        return f"linewatch.services.{self.name}"

    def settings_class(self) -> type[CommonSettings]:
        module, _, name = self.settings.partition(":")
        return cast(type[CommonSettings], getattr(importlib.import_module(f"{self.module}.{module}"), name))

    def progress_counters(self, topics: dict[str, str]) -> tuple[str, ...]:
        """Counters that move while it works off a backlog (stats arrive every second, so they never settle)."""
        return tuple(f"records_in.{topics[t]}" for t in self.inputs if t != "stats")


SERVICES: tuple[Service, ...] = (
    Service(
        "simulator",
        "publishes the simulated reference plant (frames, lots, labelled faults, malformed messages)",
        "settings:SimulatorSettings",
        inputs=(),
        outputs=("raw", "lots", "stats"),
        shown=(("samples_sent", "samples sent"),),
        pipeline=False,
    ),
    Service(
        "gateway",
        "OPC UA and MQTT (Sparkplug B, JSON) -> telemetry frames on the raw topic, stored and forwarded",
        "settings:GatewaySettings",
        inputs=(),
        outputs=("raw", "deadletter", "stats"),
        shown=(("values_in", "values read"), ("values_sent", "values sent"), ("buffered_records", "frames buffered")),
        pipeline=False,
    ),
    Service(
        "validator",
        "raw frames -> valid frames, or dead letters with a reason",
        "settings:ValidatorSettings",
        inputs=("raw",),
        outputs=("valid", "deadletter", "stats"),
        shown=(("records_in", "messages in"), ("samples_valid", "valid samples"), ("dead_letters", "dead letters")),
    ),
    Service(
        "scorer",
        "valid frames -> anomaly scores per sample (signed model per equipment class)",
        "settings:ScorerSettings",
        inputs=("valid",),
        outputs=("scores", "deadletter", "stats"),
        shown=(("samples_scored", "samples scored"), ("samples_anomalous", "anomalous samples")),
    ),
    Service(
        "alerter",
        "frames, scores and operator actions -> ISA-18.2 alarm events; notifications, operator API",
        "settings:AlerterSettings",
        inputs=("valid", "scores", "alarm_actions"),
        outputs=("alarms", "alarm_actions", "deadletter", "stats"),
        shown=(
            ("records_in", "records evaluated"),
            ("alarms_raised", "alarms raised"),
            ("notifications_sent", "notifications sent"),
        ),
    ),
    Service(
        "writer",
        "valid frames, scores, alarm and lot events, stats -> InfluxDB; offsets committed after a 2xx",
        "settings:WriterSettings",
        inputs=("valid", "scores", "alarms", "lots", "stats"),
        outputs=("deadletter", "stats"),
        shown=(
            ("points_written", "points in InfluxDB (readings, scores, alarms)"),
            ("dead_letters", "dead letters"),
            ("write_retries", "InfluxDB retries"),
        ),
    ),
)

BY_NAME = {service.name: service for service in SERVICES}
PIPELINE = tuple(service.name for service in SERVICES if service.pipeline)


def service(name: str) -> Service:
    return BY_NAME[name]
