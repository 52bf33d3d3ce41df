"""Terminal view of a running pipeline, fed by the services' stats topic."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table

from linewatch.contract import ServiceStats, stats_decoder
from linewatch.settings import KafkaSettings

# (service, counter, label) shown as pipeline stages, in flow order.
STAGES = [
    ("simulator", "samples_sent", "simulator: samples sent"),
    ("validator", "messages_in", "validator: messages in"),
    ("validator", "samples_valid", "validator: valid samples"),
    ("validator", "dead_letters", "validator: dead letters"),
    ("writer", "records_in", "writer: records in"),
    ("writer", "points_written", "writer: points in InfluxDB"),
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

    def peak_rss(self, service: str) -> int:
        return max((s.peak_rss_bytes for (name, _), s in self.latest.items() if name == service), default=0)

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


class StatsReader:
    """Reads the stats topic with assign() (group joins are slow on Tansu) from the beginning."""

    def __init__(self, settings: KafkaSettings) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        partitions = [TopicPartition(settings.topics.stats, p) for p in range(settings.partitions)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_beginning(*partitions)

    def poll(self, on_stats: Callable[[ServiceStats], None], timeout_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            batches = self._consumer.poll(timeout_ms=remaining)
            for records in batches.values():
                for record in records:
                    on_stats(stats_decoder.decode(record.value))
            if remaining == 0:
                return

    def close(self) -> None:
        self._consumer.close()
