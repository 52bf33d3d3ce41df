"""Terminal view of a running pipeline, fed by the services' stats topic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table

from linewatch.core.contract import AlarmEvent, ServiceStats, alarm_event_decoder, stats_decoder
from linewatch.core.kafka import TopicReader
from linewatch.core.services import SERVICES
from linewatch.core.settings import KafkaSettings

# (service, counter, label) shown as pipeline stages, in flow order: what each service's registry entry shows.
STAGES = [(s.name, counter, f"{s.name}: {label}") for s in SERVICES for counter, label in s.shown]


@dataclass
class PipelineView:
    latest: dict[tuple[str, str], ServiceStats] = field(default_factory=dict)
    history: dict[tuple[str, str], list[tuple[float, dict[str, int]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    health: dict[str, tuple[bool, str]] = field(default_factory=dict)  # service -> its GET /readyz
    events: list[str] = field(default_factory=list)  # restarts and the broker's losses, newest first

    def note(self, event: str) -> None:
        self.events.insert(0, event)
        del self.events[20:]

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

    def render_health(self) -> Table:
        table = Table(title="services (GET /readyz) and what happened to them")
        for column in ("service", "ready", "why / event"):
            table.add_column(column)
        for name, (ready, reason) in self.health.items():
            table.add_row(name, "[green]yes" if ready else "[red]NO", reason)
        for event in self.events[:8]:
            table.add_row("", "", f"[yellow]{event}")
        return table


class StatsReader(TopicReader):
    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings, settings.topics.stats)

    def poll(self, on_stats: Callable[[ServiceStats], None], timeout_s: float = 0.5) -> None:
        self.read(lambda value: on_stats(stats_decoder.decode(value)), timeout_s)


class AlarmFeed(TopicReader):
    """The latest alarm lifecycle events (raised, acknowledged, cleared, escalated), newest first."""

    def __init__(self, settings: KafkaSettings, keep: int = 12) -> None:
        super().__init__(settings, settings.topics.alarms)
        self.events: list[AlarmEvent] = []
        self._keep = keep

    def poll(self, timeout_s: float = 0.2) -> None:
        self.read(self._add, timeout_s)

    def _add(self, value: bytes) -> None:
        self.events.insert(0, alarm_event_decoder.decode(value))
        del self.events[self._keep :]

    def render(self) -> Table:
        table = Table(title="latest alarms (ISA-18.2 events; `linewatch alarms list` for the active ones)")
        for column in ("time (UTC)", "priority", "state", "alarm", "message"):
            table.add_column(column)
        for event in self.events:
            state = f"{event.state} (escalated)" if event.kind == "escalation" else event.state
            table.add_row(event.ts.strftime("%H:%M:%S"), event.priority, state, event.alarm_id, event.message[:70])
        return table
