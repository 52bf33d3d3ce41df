"""Statistical process control on subgroup means: Western Electric and Nelson run rules.

Points are z-scores, (subgroup mean - centre line) / sigma, oldest first; a rule looks at the newest
points only, so it fires on the subgroup that completes the pattern.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import msgspec

HISTORY = 9  # the longest pattern a rule needs

RULES: dict[str, tuple[str, Callable[[Sequence[float]], bool]]] = {}


def _rule(name: str, text: str) -> Callable[[Callable[[Sequence[float]], bool]], Callable[[Sequence[float]], bool]]:
    def register(check: Callable[[Sequence[float]], bool]) -> Callable[[Sequence[float]], bool]:
        RULES[name] = (text, check)
        return check

    return register


def _beyond(points: Sequence[float], count: int, of: int, sigmas: float) -> bool:
    last = points[-of:]
    if len(last) < of:
        return False
    return sum(z > sigmas for z in last) >= count or sum(z < -sigmas for z in last) >= count


@_rule("we1", "1 point beyond 3 sigma")
def _we1(points: Sequence[float]) -> bool:
    return abs(points[-1]) > 3


@_rule("we2", "2 of 3 points beyond 2 sigma on one side")
def _we2(points: Sequence[float]) -> bool:
    return abs(points[-1]) > 2 and _beyond(points, 2, 3, 2)


@_rule("we3", "4 of 5 points beyond 1 sigma on one side")
def _we3(points: Sequence[float]) -> bool:
    return abs(points[-1]) > 1 and _beyond(points, 4, 5, 1)


@_rule("we4", "8 points in a row on one side of the centre line")
def _we4(points: Sequence[float]) -> bool:
    return _beyond(points, 8, 8, 0)


@_rule("nelson3", "6 points in a row steadily rising or falling")
def _nelson3(points: Sequence[float]) -> bool:
    last = points[-6:]
    if len(last) < 6:
        return False
    steps = [b - a for a, b in itertools.pairwise(last)]
    return all(s > 0 for s in steps) or all(s < 0 for s in steps)


def violated(points: Sequence[float], enabled: Sequence[str]) -> str | None:
    """The first enabled rule the newest point breaks, or None."""
    for name in enabled:
        if RULES[name][1](points):
            return name
    return None


class Chart(msgspec.Struct):
    """One sensor's chart on one unit: the subgroup being filled, the phase-I baseline, recent points."""

    window: int = -1  # subgroup index, floor(ts / subgroup_s)
    total: float = 0.0
    squares: float = 0.0
    count: int = 0
    baseline: list[float] = []
    baseline_error: list[float] = []  # variance of each baseline mean from the spread inside its subgroup
    center: float | None = None
    sigma: float | None = None
    points: list[float] = []
    # Readings in the baseline's subgroups: the typical count, and one reading's variance inside a subgroup.
    baseline_sizes: list[int] = []
    typical_size: float = 0.0
    reading_variance: float = 0.0

    def add(self, ts: float, value: float, subgroup_s: float, baseline_subgroups: int) -> float | None:
        """Add one reading; returns the z-score of a subgroup it completed (after the baseline)."""
        window = math.floor(ts / subgroup_s)
        completed = None
        if window != self.window:
            if self.count > 1:
                completed = self._close(baseline_subgroups)
            self.window, self.total, self.squares, self.count = window, 0.0, 0.0, 0
        self.total += value
        self.squares += value * value
        self.count += 1
        return completed

    def _close(self, baseline_subgroups: int) -> float | None:
        n = self.count
        mean = self.total / n
        variance = max(self.squares - n * mean * mean, 0.0) / (n - 1)
        if not (math.isfinite(mean) and math.isfinite(variance)):
            # A reading so extreme that its sums overflow is for the limit checks: charted, it would leave the
            # baseline infinite or NaN for good, and no later shift could show.
            return None
        if self.center is None or self.sigma is None:
            self.baseline.append(mean)
            self.baseline_error.append(variance / n)
            self.baseline_sizes.append(n)
            if len(self.baseline) >= baseline_subgroups:
                sizes, errors = self.baseline_sizes, self.baseline_error
                if len(sizes) == len(errors):  # else a baseline begun before sizes were kept: no widening
                    self.typical_size = sum(sizes) / len(sizes)
                    self.reading_variance = sum(e * k for e, k in zip(errors, sizes, strict=True)) / len(sizes)
                ranges = [abs(b - a) for a, b in zip(self.baseline, self.baseline[1:], strict=False)]
                self.center = sum(self.baseline) / len(self.baseline)
                # Moving range / d2 (1.128) sees drift between subgroups; the pooled spread inside them is the
                # far steadier estimate for a white-noise process. The larger one: 25 ranges alone often
                # underestimate sigma by a third, and every such chart raises false alarms.
                within = math.sqrt(sum(self.baseline_error) / len(self.baseline_error))
                moving = sum(ranges) / len(ranges) / 1.128
                self.sigma = max(moving, within, 1e-9 * max(1.0, abs(self.center)))
            return None
        # A subgroup with fewer readings than the baseline's (cut short by a stop or a setpoint move) has a noisier
        # mean: its sigma widens by the difference, or every short subgroup would look like a shift.
        short = 1 / n - 1 / self.typical_size if self.typical_size > 0 else 0.0
        z = (mean - self.center) / math.sqrt(self.sigma**2 + self.reading_variance * max(short, 0.0))
        self.points = [*self.points[-(HISTORY - 1) :], z]
        return z

    def interrupt(self) -> None:
        """The unit stopped: the subgroup in progress is incomplete and dropped; the baseline holds."""
        self.window, self.total, self.squares, self.count = -1, 0.0, 0.0, 0

    def restart(self) -> None:
        """Recipe change: a new process, so a new baseline."""
        self.interrupt()
        self.baseline, self.baseline_error, self.center, self.sigma, self.points = [], [], None, None, []
        self.baseline_sizes, self.typical_size, self.reading_variance = [], 0.0, 0.0
