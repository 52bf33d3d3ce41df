"""`linewatch drill --days D`: days of the simulated plant (recipe changes, start-ups, idle and maintenance
periods, lots) through the scorer's and the alerter's own engines in this process, without broker or InfluxDB,
so a week runs in minutes; then the alarm KPI report and, for injected faults, what each one raised and what
its alarm told the operator to do. The services' Kafka plumbing is shown by `drill --hours`."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from linewatch.core.console import out
from linewatch.core.contract import AlarmEvent, TelemetryFrame, raises_alarm
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.settings import DEFAULT_PLANT_FILE
from linewatch.services.alerter import kpi, report
from linewatch.services.alerter.engine import AlarmEngine
from linewatch.services.alerter.notify import should_notify, text_of
from linewatch.services.alerter.rationalization import load_alarm_database
from linewatch.services.alerter.rules import Notifications, load_rules
from linewatch.services.alerter.state import UnitState
from linewatch.services.scorer.agents import scores_for
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.rollout import ModelSet
from linewatch.services.simulator.commands import named_injections, parse_fault
from linewatch.simulation.faults import Injection, random_schedule
from linewatch.simulation.plant_sim import simulated
from linewatch.tools.drill import fault_alarms, past_start_s, train_into

AFTER_FAULT_S = 600.0  # alarms in the fault's area in the 10 minutes from its start
WORKERS = 2
GUIDANCE = {"low": 80.0, "medium": 15.0, "high": 5.0}  # EEMUA 191 / ISA-18.2 annunciated priority split


@dataclass(frozen=True)
class Stretch:
    start_s: float
    days: float
    seed: int

    @property
    def end_s(self) -> float:
        return self.start_s + self.days * 86400


def train_in_process(plant: PlantModel, hours: float, seed: int) -> tuple[Path, bytes]:
    """Train, sign and activate a version in a throw-away registry (loaded by each worker the scorer's way)."""
    registry, key = Path(tempfile.mkdtemp(prefix="linewatch-drill-models-")), secrets.token_bytes(32)
    train_into(plant, registry, key, hours, seed)
    return registry, key


def stretch_events(
    stretch: Stretch, injections: list[Injection], registry: Path, key: bytes, units: frozenset[str]
) -> list[AlarmEvent]:
    """One worker's share: the whole plant is simulated (cheap), its own units scored and judged."""
    plant = load_plant(DEFAULT_PLANT_FILE)
    engine = AlarmEngine(plant, load_rules(), load_alarm_database())
    models = ModelSet(registry, key)
    models.refresh()
    frames = simulated(plant, stretch.start_s, stretch.days * 24, stretch.seed, injections)
    return list(alarm_events(plant, (f for f in frames if f.equipment_id in units), models, engine))


def alarm_events(
    plant: PlantModel, frames: Iterable[TelemetryFrame], models: ModelSet, engine: AlarmEngine
) -> Iterator[AlarmEvent]:
    """Each frame through the scorer and the alerter as their agents would take it (batched per frame)."""
    scorer = PlantScorer(plant)
    units: dict[str, UnitState] = {}
    for frame in frames:
        unit = units.setdefault(frame.equipment_id, UnitState())
        yield from engine.on_frame(unit, frame)
        for scores in scores_for(scorer, models, [frame])[0]:
            yield from engine.on_scores(unit, scores)


def fault_injections(plant: PlantModel, stretch: Stretch, faults: list[str], every_fault: bool) -> list[Injection]:
    rng = np.random.default_rng([stretch.seed, 3])
    injections = named_injections(plant, faults, stretch.start_s, stretch.days * 86400, rng)
    if every_fault:
        names = sorted(plant.faults)
        injections += random_schedule(plant, stretch.start_s, stretch.days * 86400, len(names), rng, names)
    return injections


def long_drill(days: float, faults: list[str], every_fault: bool, train_hours: float, seed: int) -> int:
    plant = load_plant(DEFAULT_PLANT_FILE)
    for spec in faults:
        parse_fault(spec, plant)  # a mistyped fault is said now, not after training
    load_alarm_database()  # a broken database is said now, not after training
    start_s = past_start_s(days * 86400)
    stretch = Stretch(start_s, days, seed)
    injections = fault_injections(plant, stretch, faults, every_fault)
    started = time.monotonic()
    registry, key = train_in_process(plant, train_hours, seed=1)  # never the stretch's own seed
    out(f"trained on {train_hours:g} h of normal operation in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    # Units are independent for scoring and alarming: split them across the cores.
    workers = max(1, min(os.cpu_count() or 1, WORKERS))
    ids = sorted(e.id for e in plant.equipment)
    shares = [frozenset(ids[i::workers]) for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(partial(stretch_events, stretch, injections, registry, key), shares)
        events = sorted((e for part in parts for e in part), key=lambda e: (e.ts, e.event_id))
    start, end = datetime.fromtimestamp(start_s, UTC), datetime.fromtimestamp(stretch.end_s, UTC)
    out(
        f"simulated {days:g} days {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC "
        f"({len(plant.equipment)} units, {len(injections)} injected faults) in {time.monotonic() - started:.0f} s"
    )
    rows = kpi.rows_of(events)
    kpis = kpi.compute(rows, start, end, [area.name for area in plant.areas])
    for text in kpis.lines() + report.build(rows, start, end).lines() + guidance_lines(kpis):
        out(text)
    missed = report_faults(plant, events, injections, load_rules().notifications) if injections else 0
    return 1 if missed else 0


def guidance_lines(report: kpi.KpiReport) -> list[str]:
    """The annunciated priority split against the guidance (high and critical together as urgent)."""
    total = report.total or 1
    split = {
        "low": report.priorities.get("low", 0),
        "medium": report.priorities.get("medium", 0),
        "high": report.priorities.get("high", 0) + report.priorities.get("critical", 0),
    }
    shares = {p: 100.0 * n / total for p, n in split.items()}
    within = all(abs(shares[p] - GUIDANCE[p]) <= 10.0 for p in GUIDANCE)
    worst = max((area.per_10_min for area in report.areas.values()), default=0.0)
    floods = sum(area.floods for area in report.areas.values())
    days = (report.end - report.start).total_seconds() / 86400
    return [
        "priority split against the 80/15/5 guidance (high includes critical): "
        + ", ".join(f"{p} {shares[p]:.0f}% ({GUIDANCE[p]:g})" for p in GUIDANCE)
        + f" -> {'within' if within else 'NOT within'} 10 points",
        f"drill_days={days:g} alarms={report.total} worst_area_per_10_min={worst:.3f} "
        f"floods={floods} chattering={len(report.chattering)} stale={len(report.stale)} "
        f"low_pct={shares['low']:.1f} medium_pct={shares['medium']:.1f} high_pct={shares['high']:.1f}",
    ]


def report_faults(
    plant: PlantModel, events: list[AlarmEvent], injections: list[Injection], notifications: Notifications
) -> int:
    """Per fault: the first alarm on its unit, what the alarm tells the operator (event and notification),
    and the annunciated alarms in its area over the 10 minutes from its start; returns the faults missed."""
    raised = [e for e in events if raises_alarm(e.kind, e.state, e.previous)]
    missed = 0
    for injection in sorted(injections, key=lambda i: i.start_s):
        begin = injection.start_s
        hits = fault_alarms(raised, injection.equipment_id, begin, injection.end_s)
        area = plant.equipment_by_id[injection.equipment_id].area
        in_area = sum(
            1 for e in raised if e.annunciate and e.area == area and begin <= e.ts.timestamp() < begin + AFTER_FAULT_S
        )
        where = f"fault {injection.fault_name} on {injection.equipment_id}/{injection.sensor}"
        if not hits:
            out(f"{where}: NO ALARM; {in_area} alarm(s) in {area} in the 10 min after its start")
            missed += 1
            continue
        first = hits[0]
        out(
            f"{where}: {first.priority} alarm after {first.ts.timestamp() - begin:.0f} s: {first.alarm_id} "
            f"({first.rationalization or 'not rationalized'}); {in_area} alarm(s) in {area} in the 10 min after"
        )
        out(f"  corrective action in the event: {first.corrective_action or '-'}")
        routed = [
            (e, [r.name for r in notifications.routes if r.matches(e.priority, e.area)])
            for e in hits
            if should_notify(e)
        ]
        sent = next(((e, names) for e, names in routed if names), None)
        if sent is not None:
            out(f"  notification to {', '.join(sent[1])}: {text_of(sent[0])}")
        elif routed:
            out(f"  notification: no route takes {routed[0][0].priority} alarms; console text: {text_of(routed[0][0])}")
        else:
            out("  notification: none (not annunciated)")
    out(f"faults alarmed: {len(injections) - missed}/{len(injections)}")
    return missed
