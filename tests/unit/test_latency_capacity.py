"""`bench latency`'s live capacity (a step of live load kept up when its median latency did not grow) and its
stretches of a run (latency, each process's CPU, the machine's idle and stolen time over each)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from linewatch.core.plant import PlantModel
from linewatch.tools.bench import machine_seconds
from linewatch.tools.latencybench import (
    STEP_S,
    LiveRun,
    by_window,
    hop_times,
    keeps_up,
    passed_at,
    slow_frames,
    stolen_note,
)

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
    return LiveRun(frames, latencies, scored, [], unstored=behind, behind=behind, influx_write_s=[])


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


def test_each_stretch_has_the_latencies_of_its_frames_and_each_process_share_of_a_core() -> None:
    run = step(lambda s: 0.1 + 0.01 * s)
    # The broker's CPU grows over the step: 0.5 s a second for the first 10 s, then 0.8 s a second.
    run.cpu = [
        (START + t / 2, {"broker": sum(0.25 if i < 20 else 0.4 for i in range(t))}) for t in range(int(STEP_S) * 2 + 1)
    ]
    rows = by_window(run, START, 10.0)
    assert [start - START for start, _, _ in rows] == [0.0, 10.0]
    (_, first, first_cpu), (_, second, second_cpu) = rows
    assert len(first) == len(second) == 30
    assert max(first) < min(second)  # the frames due in each stretch, not all of them
    assert first_cpu["broker"] == pytest.approx(0.5) and second_cpu["broker"] == pytest.approx(0.8)
    # No CPU samples (a run without pids): latencies only.
    run.cpu = []
    assert all(share == {} for _, _, share in by_window(run, START, 10.0))


def test_the_machine_idle_and_stolen_time_come_from_the_first_line_of_proc_stat() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice; the per-core lines after it are not summed.
    stat = "cpu  500 10 200 4000 100 0 5 300 0 0\ncpu0 250 5 100 2000 50 0 2 150 0 0\n"
    assert machine_seconds(stat) == {"idle": 4100 / ticks, "steal": 300 / ticks}
    # This machine's own: both grow, never shrink.
    first = machine_seconds()
    assert all(later >= earlier for later, earlier in zip(machine_seconds().values(), first.values(), strict=True))


def test_a_minute_the_hypervisor_took_a_tenth_of_a_core_of_is_said_to_be_the_machines() -> None:
    quiet = [{"scorer": 0.3, "idle": 0.4, "steal": 0.0}, {"scorer": 0.3, "idle": 0.3, "steal": 0.02}]
    assert stolen_note(quiet) is None
    assert stolen_note([{"scorer": 0.3}]) is None  # no CPU samples: nothing to say
    taken = stolen_note([*quiet, {"scorer": 0.2, "idle": 0.2, "steal": 0.55}])
    assert taken is not None and "0% to 55% of a core" in taken


def test_each_frame_is_traced_to_the_first_record_of_its_unit_that_carries_its_last_sample() -> None:
    # The validator sent U0's two frames in one record 30 ms after the second was due; the scorer sent them in two.
    valid = {"U0": [(START + 1.0, START + 1.03)]}
    scores = {"U0": [(START + 0.5, START + 1.10), (START + 1.0, START + 1.25)]}
    traced = hop_times([("U0", START + 0.5, 0.7), ("U0", START + 1.0, 0.3)], {"validator": valid, "scorer": scores})
    taken = [[round(t, 3) for t in hops] for _, hops in traced]
    assert taken == [[0.53, 0.07, 0.1], [0.03, 0.22, 0.05]]
    assert passed_at(valid["U0"], START + 2.0) != passed_at(valid["U0"], START + 2.0)  # nan: never passed


def test_slow_frames_name_the_hop_that_held_them_and_come_in_bursts() -> None:
    fast = [(START + s / 10, [0.02, 0.05, 0.03]) for s in range(100)]
    # Five frames at 4 s held by the scorer, one at 8 s by the writer.
    held = [(START + 4 + s / 10, [0.02, 0.4, 0.03]) for s in range(5)] + [(START + 8, [0.02, 0.05, 0.3])]
    lines = slow_frames(sorted(fast + held), ["validator", "scorer", "writer"])
    assert "6 frames over 250 ms" in lines[0]
    assert "held longest by validator 0, scorer 5, writer 1" in lines[0]
    assert "in 2 bursts" in lines[1] and "the largest: 5 frames over 0.4 s, from 4 s" in lines[1]
    # In the order the writes came back, not by due: the same lines.
    assert slow_frames(fast[::-1] + held, ["validator", "scorer", "writer"]) == lines
    assert slow_frames(fast, ["validator", "scorer", "writer"]) == ["slow        no frame over 250 ms"]


def test_each_step_fault_goes_on_a_few_units_of_its_class_spread_over_them_and_over_the_middle_third() -> None:
    from linewatch.core.plant import read_plant
    from linewatch.core.settings import DEFAULT_PLANT_FILE
    from linewatch.tools.latencybench import FAULTED_UNITS, bench_plant, fault_schedule

    plant = bench_plant(read_plant(DEFAULT_PLANT_FILE), 10.0, 12)
    schedule = fault_schedule(plant, 60.0)
    by_fault: dict[str, list[str]] = {}
    for unit, (name, start_s) in schedule.items():
        by_fault.setdefault(name, []).append(unit)
        assert 20.0 <= start_s < 40.0
    assert by_fault and set(by_fault) == {name for name, fault in plant.faults.items() if fault.shape == "step"}
    for name, units in by_fault.items():
        of_class = [e.id for e in plant.equipment if e.equipment_class == plant.faults[name].equipment_class]
        assert 1 < len(units) <= FAULTED_UNITS and set(units) <= set(of_class)
        assert of_class.index(units[-1]) > len(of_class) // 2  # spread over the class, not its first few
        assert len({schedule[unit][1] for unit in units}) == len(units)  # apart, not all at once


def test_the_faulted_units_with_no_alarm_are_named_with_their_fault_and_its_start() -> None:
    from linewatch.tools.latencybench import unalarmed

    schedule = {"C1-LAM-01": ("lamination_pressure_loss", 20.0), "C1-LAM-01.4": ("lamination_pressure_loss", 26.7)}
    assert unalarmed(schedule, {"C1-LAM-01", "S1-FURN-01"}) == (
        "alarms      no alarm event on faulted units: C1-LAM-01.4 (lamination_pressure_loss from 27 s)"
    )
    assert unalarmed(schedule, set(schedule)) is None


def test_the_benchmarks_furnaces_hold_their_soak_where_the_plants_ramp() -> None:
    """Minutes of training cannot cover a 2.3-h ramp/soak programme: the benchmark's furnaces stay at their recipe's
    setpoint, at any time of day, while the reference plant's move through the programme."""
    from linewatch.core.plant import read_plant
    from linewatch.core.settings import DEFAULT_PLANT_FILE
    from linewatch.simulation.plant_sim import simulated
    from linewatch.tools.latencybench import bench_plant, with_units

    def setpoints(plant: PlantModel) -> set[int]:
        furnace = with_units(plant, {"S1-FURN-01"})
        return {
            round(sample.values["setpoint"])
            for start_s in (START, START + 1800, START + 3600)
            for frame in simulated(furnace, start_s, 60 / 3600, seed=1)
            for sample in frame.samples
            if frame.state == "running"
        }

    reference = read_plant(DEFAULT_PLANT_FILE)
    held = setpoints(bench_plant(reference, 10.0, 1))
    assert held and held <= {550, 500}  # the two recipes' soak temperatures
    assert len(setpoints(reference)) > 10
