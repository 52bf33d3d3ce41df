"""Terminal view of a running pipeline, fed by the services' stats topic."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.table import Table

from linewatch.core.contract import ACTIVE_STATES, AlarmEvent, ServiceStats, alarm_event_decoder, stats_decoder
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


PRIORITY_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}
PRIORITIES = ("critical", "high", "medium", "low")


def shorten(text: str, width: int = 110) -> str:
    """Cut at a word boundary, with an ellipsis, never mid-word."""
    if len(text) <= width:
        return text
    return text[:width].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def active_by_area(latest: Iterable[AlarmEvent]) -> dict[str, Counter[str]]:
    """Active alarms (unacknowledged or acknowledged) per area and priority, from each alarm's latest event;
    `unack` counts the unacknowledged ones."""
    areas: dict[str, Counter[str]] = defaultdict(Counter)
    for event in latest:
        if event.state in ACTIVE_STATES:
            areas[event.area][event.priority] += 1
            areas[event.area]["unack"] += event.state == "unacknowledged"
    return dict(areas)


class AlarmFeed(TopicReader):
    """The latest alarm lifecycle events (raised, acknowledged, cleared, escalated), newest first, and each
    alarm's current state for the per-area summary."""

    def __init__(self, settings: KafkaSettings, keep: int = 12) -> None:
        super().__init__(settings, settings.topics.alarms)
        self.events: list[AlarmEvent] = []
        self.current: dict[str, AlarmEvent] = {}  # alarm id -> its latest event
        self._keep = keep

    def poll(self, timeout_s: float = 0.2) -> None:
        self.read(self._add, timeout_s)

    def _add(self, value: bytes) -> None:
        event = alarm_event_decoder.decode(value)
        self.events.insert(0, event)
        del self.events[self._keep :]
        if event.alarm_id not in self.current or event.ts >= self.current[event.alarm_id].ts:
            self.current[event.alarm_id] = event

    def reopened(self) -> AlarmFeed:
        self.current.clear()  # the alerter's state went with the broker's: those alarms are no more
        super().reopened()
        return self

    def render_areas(self) -> Table:
        table = Table(title="active alarms by area and priority")
        table.add_column("area")
        for priority in PRIORITIES:
            table.add_column(priority, justify="right", style=PRIORITY_STYLE[priority])
        table.add_column("unacknowledged", justify="right")
        for area, counts in sorted(active_by_area(self.current.values()).items()):
            worst = next((p for p in PRIORITIES if counts[p]), "low")
            table.add_row(
                f"[{PRIORITY_STYLE[worst]}]{area}",
                *(str(counts[p]) if counts[p] else "·" for p in PRIORITIES),
                str(counts["unack"]),
            )
        if not table.rows:
            table.add_row("[green]no active alarm", *("" for _ in PRIORITIES), "")
        return table

    def render(self) -> Table:
        table = Table(title="latest alarms (ISA-18.2 events; `linewatch alarms list` for the active ones)")
        for column in ("event time (UTC, data time)", "priority", "state", "alarm", "message"):
            table.add_column(column, overflow="fold")
        for event in self.events:
            state = f"{event.state} (escalated)" if event.kind == "escalation" else event.state
            priority = f"[{PRIORITY_STYLE.get(event.priority, '')}]{event.priority.upper()}"
            table.add_row(f"{event.ts:%Y-%m-%d %H:%M:%S}", priority, state, event.alarm_id, shorten(event.message))
        return table
