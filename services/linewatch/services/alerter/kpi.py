"""Alarm system performance (ISA-18.2, EEMUA 191) from alarm events: alarm rate per area per 10 minutes,
flood periods, chattering and stale alarms, the share of the ten most frequent alarms, priority split."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from linewatch.core.contract import ACTIVE_STATES, AlarmEvent, becomes_active, raises_alarm

PERIOD_S = 600.0
FLOOD_ALARMS = 10  # more than this in 10 minutes in one area is a flood
CHATTER_COUNT, CHATTER_WINDOW_S = 3, 60.0
STALE_S = 24 * 3600.0


class AlarmRow(msgspec.Struct, frozen=True):
    """The fields of an alarm event the KPIs need (from the alarm topic, a file or InfluxDB)."""

    ts: datetime
    area: str
    alarm_id: str
    kind: str
    state: str
    previous: str
    cause: str
    priority: str
    annunciate: bool
    rationalization: str | None = None  # since alarm event 1.1


def rows_of(events: Iterable[AlarmEvent]) -> list[AlarmRow]:
    return [msgspec.convert(msgspec.structs.asdict(event), AlarmRow) for event in events]


def chatters(starts: list[float]) -> bool:
    """Whether activations at these times chatter: CHATTER_COUNT or more within one CHATTER_WINDOW_S."""
    return any(sum(1 for u in starts if t <= u < t + CHATTER_WINDOW_S) >= CHATTER_COUNT for t in starts)


def is_alarm(row: AlarmRow) -> bool:
    """An annunciated activation: what an operator counts as one alarm."""
    return row.annunciate and raises_alarm(row.kind, row.state, row.previous)


@dataclass
class AreaKpi:
    alarms: int = 0
    per_10_min: float = 0.0
    peak_10_min: int = 0
    floods: int = 0


@dataclass
class KpiReport:
    start: datetime
    end: datetime
    areas: dict[str, AreaKpi] = field(default_factory=dict)
    total: int = 0
    chattering: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    top10_share_pct: float = 0.0
    top10: list[tuple[str, int]] = field(default_factory=list)
    priorities: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        hours = (self.end - self.start).total_seconds() / 3600
        out = [f"alarm KPIs {self.start.isoformat()} .. {self.end.isoformat()} ({hours:.1f} h), {self.total} alarms"]
        out.append(f"{'area':<16}{'alarms':>8}{'per 10 min':>12}{'peak 10 min':>13}{'floods':>8}")
        for area, kpi in sorted(self.areas.items()):
            out.append(f"{area:<16}{kpi.alarms:>8}{kpi.per_10_min:>12.2f}{kpi.peak_10_min:>13}{kpi.floods:>8}")
        split = ", ".join(f"{p} {100 * n / self.total:.0f}%" for p, n in sorted(self.priorities.items())) or "-"
        out.append(f"priority split: {split}")
        out.append(
            f"top-10 share: {self.top10_share_pct:.0f}% ({', '.join(f'{a} x{n}' for a, n in self.top10[:3])} ...)"
        )
        out.append(
            f"chattering alarms (>= {CHATTER_COUNT} in {CHATTER_WINDOW_S:g} s): "
            f"{len(self.chattering)} {self.chattering[:5]}"
        )
        out.append(f"stale alarms (active > 24 h): {len(self.stale)} {self.stale[:5]}")
        return out


def compute(rows: Iterable[AlarmRow], start: datetime, end: datetime, areas: Iterable[str] = ()) -> KpiReport:
    ordered = sorted(rows, key=lambda r: r.ts)
    report = KpiReport(start, end, {area: AreaKpi() for area in areas})
    periods = max(1, round((end - start).total_seconds() / PERIOD_S))
    times: dict[str, list[float]] = defaultdict(list)
    per_alarm: Counter[str] = Counter()
    activations: dict[str, list[float]] = defaultdict(list)
    raised_at: dict[str, float] = {}
    for row in ordered:
        t = row.ts.timestamp()
        if becomes_active(row.kind, row.state, row.previous):
            activations[row.alarm_id].append(t)  # annunciated or not: chattering counts every activation
            raised_at.setdefault(row.alarm_id, t)
        elif row.state not in ACTIVE_STATES:
            raised_at.pop(row.alarm_id, None)
        if not is_alarm(row):
            continue
        kpi = report.areas.setdefault(row.area, AreaKpi())
        kpi.alarms += 1
        times[row.area].append(t)
        per_alarm[row.alarm_id] += 1
        report.priorities[row.priority] = report.priorities.get(row.priority, 0) + 1
    for area, kpi in report.areas.items():
        kpi.per_10_min = kpi.alarms / periods
        kpi.peak_10_min, kpi.floods = _sliding_peak_and_floods(times[area])
    report.total = sum(per_alarm.values())
    report.top10 = per_alarm.most_common(10)
    report.top10_share_pct = 100 * sum(n for _, n in report.top10) / report.total if report.total else 0.0
    for alarm_id, starts in activations.items():
        if chatters(starts):
            report.chattering.append(alarm_id)
    report.stale = sorted(a for a, t in raised_at.items() if end.timestamp() - t > STALE_S)
    return report


def _sliding_peak_and_floods(times: list[float]) -> tuple[int, int]:
    """The most alarms in any 10-minute window, and the flood periods: windows over the flood threshold,
    overlapping ones merged into one period."""
    peak, floods, flood_until, last = 0, 0, -1.0, 0
    for first, t in enumerate(times):
        while last < len(times) and times[last] < t + PERIOD_S:
            last += 1
        count = last - first
        peak = max(peak, count)
        if count > FLOOD_ALARMS:
            if t > flood_until:
                floods += 1
            flood_until = t + PERIOD_S
    return peak, floods
