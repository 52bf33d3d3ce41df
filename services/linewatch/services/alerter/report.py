"""The alarm system's bad actors from its own history (ISA-18.2 monitoring and assessment): unrationalized
alarms, the most frequent alarms, standing and stale alarms, chattering and fleeting alarms, each chattering or
fleeting alarm with the off-delay or on-delay that its history says would have removed most of its noise."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from linewatch.core.contract import ACTIVE_STATES, becomes_active
from linewatch.services.alerter.kpi import CHATTER_COUNT, CHATTER_WINDOW_S, STALE_S, AlarmRow, chatters, is_alarm

FLEETING_S = 60.0  # active for less than this and gone by itself: the operator could not have acted
CLEARED_STATES = frozenset({"normal", "rtn_unacknowledged"})  # the condition itself cleared
COVERAGE = 0.9  # a suggested delay removes at least this share of the noise it is aimed at
TOP = 10


@dataclass
class History:
    """One alarm's activations (start, end or None while active) and its annunciated count."""

    area: str = ""
    priority: str = ""
    rationalization: str | None = None
    periods: list[tuple[float, float | None]] = field(default_factory=list)
    cleared: list[bool] = field(default_factory=list)  # per period: the condition itself cleared
    annunciated: int = 0

    def durations(self) -> list[float]:
        """Of the activations whose condition cleared by itself (not shelved, suppressed or taken out)."""
        return [
            end - start for (start, end), c in zip(self.periods, self.cleared, strict=True) if end is not None and c
        ]

    def gaps(self) -> list[float]:
        """From each clear to the next activation."""
        return [
            later[0] - end for (_, end), later in zip(self.periods, self.periods[1:], strict=False) if end is not None
        ]


@dataclass
class Suggestion:
    alarm_id: str
    problem: str  # chattering or fleeting
    setting: str  # off_delay_s or on_delay_s
    value_s: float
    removes: int  # activations the setting would have merged or filtered out
    of: int


@dataclass
class AlarmReport:
    start: datetime
    end: datetime
    total: int = 0
    unrationalized: list[tuple[str, int]] = field(default_factory=list)
    bad_actors: list[tuple[str, int, str]] = field(default_factory=list)  # alarm, count, priority
    standing: list[tuple[str, float]] = field(default_factory=list)  # alarm, active for (s) at the end
    stale: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"alarm report {self.start.isoformat()} .. {self.end.isoformat()}: {self.total} annunciated alarms"]
        out.append(f"unrationalized alarms: {len(self.unrationalized)}")
        out += [f"  {alarm} x{n}" for alarm, n in self.unrationalized]
        out.append(f"top {TOP} bad actors:")
        share = 100 * sum(n for _, n, _ in self.bad_actors) / self.total if self.total else 0.0
        out += [f"  {alarm:<44} x{n:<5} {priority}" for alarm, n, priority in self.bad_actors]
        out.append(f"  ({share:.0f}% of all alarms)")
        out.append(f"standing alarms (active at the end): {len(self.standing)}")
        out += [f"  {alarm} active for {seconds / 3600:.1f} h" for alarm, seconds in self.standing]
        out.append(f"stale alarms (active > {STALE_S / 3600:g} h): {len(self.stale)} {self.stale}")
        chattering = [s for s in self.suggestions if s.problem == "chattering"]
        fleeting = [s for s in self.suggestions if s.problem == "fleeting"]
        for name, found, rule in (
            ("chattering", chattering, f">= {CHATTER_COUNT} activations in {CHATTER_WINDOW_S:g} s"),
            ("fleeting", fleeting, f"cleared by itself within {FLEETING_S:g} s, most activations"),
        ):
            out.append(f"{name} alarms ({rule}): {len(found)}")
            out += [
                f"  {s.alarm_id}: suggest {s.setting}={s.value_s:g} (would remove {s.removes} of {s.of} activations)"
                for s in found
            ]
        return out


def build(rows: Iterable[AlarmRow], start: datetime, end: datetime) -> AlarmReport:
    histories: dict[str, History] = defaultdict(History)
    for row in sorted(rows, key=lambda r: r.ts):
        history = histories[row.alarm_id]
        history.area, history.priority = row.area, row.priority
        history.rationalization = row.rationalization
        t = row.ts.timestamp()
        open_period = bool(history.periods) and history.periods[-1][1] is None
        if becomes_active(row.kind, row.state, row.previous) and not open_period:
            history.periods.append((t, None))
            history.cleared.append(False)
        elif open_period and row.state not in ACTIVE_STATES:
            history.periods[-1] = (history.periods[-1][0], t)
            history.cleared[-1] = row.state in CLEARED_STATES
        if is_alarm(row):
            history.annunciated += 1
    report = AlarmReport(start, end, total=sum(h.annunciated for h in histories.values()))
    report.unrationalized = sorted(
        ((a, h.annunciated) for a, h in histories.items() if h.rationalization is None and h.periods),
        key=lambda item: -item[1],
    )
    ranked = Counter({a: h.annunciated for a, h in histories.items() if h.annunciated})
    report.bad_actors = [(a, n, histories[a].priority) for a, n in ranked.most_common(TOP)]
    end_s = end.timestamp()
    for alarm_id, history in sorted(histories.items()):
        if history.periods and history.periods[-1][1] is None:
            active_for = end_s - history.periods[-1][0]
            report.standing.append((alarm_id, active_for))
            if active_for > STALE_S:
                report.stale.append(alarm_id)
        report.suggestions += _suggest(alarm_id, history)
    report.standing.sort(key=lambda item: -item[1])
    return report


def _suggest(alarm_id: str, history: History) -> list[Suggestion]:
    starts = [s for s, _ in history.periods]
    found = []
    gaps = history.gaps()
    if chatters(starts) and gaps:
        # An off-delay holds the alarm through clears shorter than itself: pick the one that bridges most of
        # the short gaps between clear and re-activation.
        short = [g for g in gaps if g < CHATTER_WINDOW_S] or gaps
        value = _round_up(float(np.quantile(short, COVERAGE)))
        found.append(Suggestion(alarm_id, "chattering", "off_delay_s", value, sum(g <= value for g in gaps), len(gaps)))
    durations = history.durations()
    fleeting = [d for d in durations if d < FLEETING_S]
    if durations and len(fleeting) * 2 > len(durations):
        # An on-delay lets a condition through only once it has lasted: pick the one that filters most of the
        # fleeting activations and none that lasted.
        value = _round_up(float(np.quantile(fleeting, COVERAGE)))
        found.append(
            Suggestion(alarm_id, "fleeting", "on_delay_s", value, sum(d <= value for d in durations), len(durations))
        )
    return found


def _round_up(seconds: float) -> float:
    """To a setting a person would write: whole seconds below a minute, then multiples of 15 s."""
    if seconds < 60:
        return float(max(1, math.ceil(seconds)))
    return float(math.ceil(seconds / 15) * 15)
