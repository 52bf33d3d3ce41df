"""Terminal view of a running pipeline, fed by the services' stats topic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rich.table import Table

from linewatch.contract import ServiceStats, scores_decoder, stats_decoder
from linewatch.kafka import TopicReader
from linewatch.settings import KafkaSettings

# (service, counter, label) shown as pipeline stages, in flow order.
STAGES = [
    ("simulator", "samples_sent", "simulator: samples sent"),
    ("validator", "messages_in", "validator: messages in"),
    ("validator", "samples_valid", "validator: valid samples"),
    ("validator", "dead_letters", "validator: dead letters"),
    ("scorer", "samples_scored", "scorer: samples scored"),
    ("scorer", "samples_anomalous", "scorer: anomalous samples"),
    ("writer", "records_in", "writer: records in"),
    ("writer", "points_written", "writer: points in InfluxDB (readings + scores)"),
    ("writer", "dead_letters", "writer: dead letters"),
    ("writer", "write_retries", "writer: InfluxDB retries"),
]


@dataclass
class PipelineView:
    latest: dict[tuple[str, str], ServiceStats] = field(default_factory=dict)
    history: dict[tuple[str, str], list[tuple[float, dict[str, int]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, stats: ServiceStats) -> None:
        key = (stats.service, stats.instance)
        self.latest[key] = stats
        points = self.history[key]
        points.append((stats.at.timestamp(), stats.counters))
        del points[:-6]

    def total(self, service: str, counter: str) -> int:
        return sum(s.counters.get(counter, 0) for (name, _), s in self.latest.items() if name == service)

    def rate(self, service: str, counter: str) -> float:
        rate = 0.0
        for (name, _), points in self.history.items():
            if name == service and len(points) >= 2 and points[-1][0] > points[0][0]:
                delta = points[-1][1].get(counter, 0) - points[0][1].get(counter, 0)
                rate += delta / (points[-1][0] - points[0][0])
        return rate

    def dead_letter_reasons(self) -> dict[str, int]:
        reasons: dict[str, int] = defaultdict(int)
        for stats in self.latest.values():
            for counter, value in stats.counters.items():
                if counter.startswith("dead_letters."):
                    reasons[f"{stats.service}: {counter.split('.', 1)[1]}"] += value
        return dict(reasons)

    def render(self, title: str) -> Table:
        table = Table(title=title, expand=False)
        table.add_column("stage")
        table.add_column("total", justify="right")
        table.add_column("per second", justify="right")
        for service, counter, label in STAGES:
            table.add_row(label, f"{self.total(service, counter):,}", f"{self.rate(service, counter):,.0f}")
        for reason, count in sorted(self.dead_letter_reasons().items()):
            table.add_row(f"  dead letter: {reason}", f"{count:,}", "")
        return table


class StatsReader(TopicReader):
    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings, settings.topics.stats)

    def poll(self, on_stats: Callable[[ServiceStats], None], timeout_s: float = 0.5) -> None:
        self.read(lambda value: on_stats(stats_decoder.decode(value)), timeout_s)


@dataclass
class Alert:
    equipment_id: str
    line: str
    first: datetime
    last: datetime
    peak: float
    sensors: list[str]


class AlertFeed(TopicReader):
    """Anomalous samples of the active model, grouped into alerts per unit (a minute apart = a new one)."""

    def __init__(self, settings: KafkaSettings, keep: int = 10) -> None:
        super().__init__(settings, settings.topics.scores)
        self.alerts: list[Alert] = []
        self._keep = keep

    def poll(self, timeout_s: float = 0.2) -> None:
        self.read(self._add, timeout_s)

    def _add(self, value: bytes) -> None:
        scores = scores_decoder.decode(value)
        if scores.role != "active":
            return
        for sample in scores.samples:
            if not sample.anomalous:
                continue
            current = next((a for a in self.alerts if a.equipment_id == scores.equipment_id), None)
            if current is not None and (sample.ts - current.last).total_seconds() <= 60:
                current.last, current.peak = sample.ts, max(current.peak, sample.score)
                continue
            sensors = sample.missing or sample.flatline or sample.top_sensors
            self.alerts.insert(0, Alert(scores.equipment_id, scores.line, sample.ts, sample.ts, sample.score, sensors))
            del self.alerts[self._keep :]

    def render(self) -> Table:
        table = Table(title="latest anomaly alerts (active model)")
        for column in ("equipment", "line", "from (UTC)", "to", "peak score", "sensors"):
            table.add_column(column)
        for alert in self.alerts:
            table.add_row(
                alert.equipment_id,
                alert.line,
                alert.first.strftime("%H:%M:%S"),
                alert.last.strftime("%H:%M:%S"),
                f"{alert.peak:.1f}",
                ", ".join(alert.sensors),
            )
        return table
