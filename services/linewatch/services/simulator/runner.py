"""Drive the plant simulator in real time or faster, publish frames, and keep the ground truth."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from linewatch.core.contract import encoder, sha256_hex
from linewatch.core.kafka import RecordProducer
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.malformed import corrupt
from linewatch.simulation.faults import FaultLabel, Injection
from linewatch.simulation.plant_sim import PlantSimulator, lot_events, lot_number

log = logging.getLogger(__name__)

# (key, payload, record timestamp in ms: the event time, so a recording replays at the pace it happened)
Send = Callable[[str, bytes, int], None]


class MalformedRecord(msgspec.Struct, frozen=True):
    kind: str
    sha256: str
    equipment_id: str
    whole_frame: bool


class Manifest(msgspec.Struct):
    """What the pipeline must make of this run: the counts to find in InfluxDB and the dead letters."""

    frames: int = 0
    samples_sent: int = 0
    valid_samples: int = 0
    expected_values: dict[str, dict[str, int]] = {}
    malformed: list[MalformedRecord] = []
    cells_by_lot: dict[str, list[str]] = {}  # electrolyte lot -> the cells built from it


@dataclass
class RunPlan:
    start_s: float
    duration_s: float
    frame_samples: int
    speed: float | None  # None: as fast as possible
    malformed_share: float = 0.0
    seed: int = 1
    injections: list[Injection] = field(default_factory=list)


def labels(plan: RunPlan) -> list[FaultLabel]:
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    return [
        FaultLabel(
            fault=i.fault_name,
            kind=i.fault.kind,
            equipment_id=i.equipment_id,
            sensor=i.sensor,
            start_s=i.start_s,
            end_s=i.end_s,
            start=iso(i.start_s),
            end=iso(i.end_s),
        )
        for i in plan.injections
    ]


def write_labels(path: Path, plan: RunPlan) -> None:
    path.write_bytes(b"".join(encoder.encode(label) + b"\n" for label in labels(plan)))


def run(
    plant: PlantModel,
    plan: RunPlan,
    send: Send,
    stop: threading.Event | None = None,
    on_chunk: Callable[[Manifest], None] | None = None,
    send_lot: Send | None = None,
) -> Manifest:
    simulator = PlantSimulator(plant, plan.seed, plan.injections)
    rng = np.random.default_rng([plan.seed, 7])
    manifest = Manifest()
    counts: dict[str, Counter[str]] = {e.id: Counter() for e in plant.equipment}
    period = plant.sample_period_s
    end_s = plan.start_s + plan.duration_s
    wall_start = time.monotonic()
    t0 = plan.start_s

    def close_lot_window(ended_s: float) -> None:
        for event in lot_events(plant, lot_number(ended_s - 1e-6, plant.lot_duration_s), ended_s):
            for lot in event.input_lots:
                manifest.cells_by_lot.setdefault(lot, []).extend(event.cells)
            if send_lot is not None:
                send_lot(event.line, encoder.encode(event), int(ended_s * 1000))

    while t0 < end_s - 1e-9 and not (stop is not None and stop.is_set()):
        if t0 > plan.start_s and t0 % plant.lot_duration_s < 1e-6:
            close_lot_window(t0)
        steps = max(1, min(plan.frame_samples, math.ceil((min(end_s, simulator.next_boundary_s(t0)) - t0) / period)))
        for frame in simulator.frames(t0, steps):
            payload = encoder.encode(frame)
            manifest.frames += 1
            manifest.samples_sent += len(frame.samples)
            readings = [set(sample.values) for sample in frame.samples]
            if plan.malformed_share and rng.random() < plan.malformed_share:
                spoilt = corrupt(frame, rng)
                payload = spoilt.payload
                if spoilt.rejected_sample is None:
                    readings = []
                else:
                    readings[spoilt.rejected_sample] -= spoilt.rejected_sensors
                manifest.malformed.append(
                    MalformedRecord(
                        spoilt.kind, sha256_hex(payload), frame.equipment_id, spoilt.rejected_sample is None
                    )
                )
            readings = [names for names in readings if names]
            for names in readings:
                counts[frame.equipment_id].update(names)
            manifest.valid_samples += len(readings)
            send(frame.equipment_id, payload, int(frame.samples[0].ts.timestamp() * 1000))
        t0 += steps * period
        if on_chunk is not None:
            on_chunk(manifest)
        if plan.speed is not None:
            ahead = (t0 - plan.start_s) / plan.speed - (time.monotonic() - wall_start)
            if ahead > 0:
                (stop.wait(ahead) if stop is not None else time.sleep(ahead))
    if t0 > plan.start_s:
        close_lot_window(t0)  # the last window, whole or as far as the run got
    manifest.expected_values = {eid: dict(c) for eid, c in counts.items() if c}
    return manifest


class KafkaPublisher(RecordProducer):
    """The simulator's frames and lot events, keyed by equipment id and line, stamped with event time."""

    def __init__(
        self, bootstrap_servers: str, frames_topic: str, lots_topic: str, security: dict[str, Any] | None = None
    ) -> None:
        super().__init__(bootstrap_servers, security)
        self._frames_topic = frames_topic
        self._lots_topic = lots_topic

    def send_frame(self, key: str, payload: bytes, timestamp_ms: int | None = None) -> None:
        self.send(self._frames_topic, -1, key.encode(), payload, timestamp_ms=timestamp_ms)

    def send_lot(self, key: str, payload: bytes, timestamp_ms: int | None = None) -> None:
        self.send(self._lots_topic, -1, key.encode(), payload, timestamp_ms=timestamp_ms)
