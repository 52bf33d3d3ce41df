"""`bench latency`'s live capacity: a step of live load kept up when its median latency did not grow."""

from __future__ import annotations

from collections.abc import Callable

from linewatch.tools.latencybench import STEP_S, LiveRun, keeps_up

START = 1_800_000_000.0


def step(latency_at: Callable[[int], float], units: int = 3, behind: int = 0) -> LiveRun:
    """A 20-s step of 1-s frames from `units` units, each stored `latency_at(seconds into the step)` late."""
    frames, latencies, scored = [], [], set()
    for second in range(int(STEP_S)):
        for unit in range(units):
            due = START + second + unit / units
            frames.append((due, f"U{unit}", b""))
            latencies.append((f"U{unit}", due, latency_at(second)))
            scored.add((f"U{unit}", round(due * 1e3)))
    return LiveRun(frames, latencies, scored, [], {}, unstored=behind, behind=behind, influx_write_s=[])


def test_a_flat_latency_keeps_up_even_when_high_and_a_growing_one_falls_behind() -> None:
    assert keeps_up(step(lambda s: 0.4), STEP_S)[0]
    # A queue growing by 5 % of the load: 50 ms more each second.
    ok, growth, _ = keeps_up(step(lambda s: 0.1 + 0.05 * s), STEP_S)
    assert not ok and growth > 0.4


def test_a_step_whose_scored_units_left_frames_unstored_fell_behind() -> None:
    assert not keeps_up(step(lambda s: 0.1, behind=4), STEP_S)[0]


def test_frames_whose_own_sample_was_not_scored_do_not_count() -> None:
    run = step(lambda s: 0.1 + 0.05 * s)
    # Only the first half's frames were themselves scored: no latency from the last quarter to judge by.
    run.scored = {(unit, ms) for unit, ms in run.scored if ms < (START + STEP_S / 2) * 1e3}
    assert not keeps_up(run, STEP_S)[0]
