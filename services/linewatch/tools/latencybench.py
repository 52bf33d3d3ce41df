"""`linewatch bench latency`: how long after a sample's timestamp its score is in InfluxDB and its alarm event
on Kafka, with the whole pipeline (validator, scorer, alerter, writer) loaded at a share of its own capacity.

The load is the reference plant's equipment several times over (24 copies of its 44 units by default), sampled
at 10 Hz in frames of one second, with settle times zero and timestamps that are wall-clock time. Every topic has
one partition by default (`--partitions`): one worker a service reads one, and on the dev broker each fetch lists
every record batch the partitions it reads hold, so partitions no worker needs only make its fetches dearer. In
one run:
1. backlog rate: the raw topic is pre-filled with past samples, the pipeline started on it, and its steady rate
   taken from the writer's scored points (first to last report that moved, while every service worked);
2. live capacity (sustainable throughput, as stream-processing benchmarks define it): the highest live load the
   pipeline keeps up with, its latency flat rather than growing, searched in steps of 20 s below the backlog rate
   (a live stream does not reach it: frames come one by one, so what a service pays a batch it pays a frame);
3. latency: the chosen share of the live capacity (`--capacity backlog`: of the backlog rate) is published live,
   each frame sent once its last sample is due;
   scores are timed when InfluxDB acknowledges the write that carries them (the writer writes through a relay
   in this process that notes the time of each 2xx: exact, where polling InfluxDB every 20 ms cost influxd half
   a core and the figures up to 20 ms), alarm events by their record's timestamp, which the alerter's producer
   sets as it sends, read back after the run (a reader polling it live was one consumer more on the broker).
   A frame counts from its last sample (it cannot be sent before); an alarm event from the last sample of the
   frame that carried the sample which completed the rule's on-delay, so on-delay, debounce and the source's
   framing are not in the figure. The first 10 s are warm-up and not counted. How late the generator sent each
   frame is printed beside them (`sent`): a generator that fell behind would hide latency. Each 10 s of the
   minute also shows each process's share of a core and the machine's idle and stolen time (on a shared VM the
   hypervisor's other guests take the cores for a while, which stalls every process at once).
4. where each frame's time went: after the run the valid and scores topics are read back, and each frame's record
   on them is timed by its timestamp, which the validator's and the scorer's producers set as they send (so no
   reader loads the broker while the latency is measured): due to valid (validator), valid to scores (scorer),
   scores to stored (writer); each hop's p50 and p99, and for the frames over the target, which hop held them.
Units' frames are spread evenly over the frame period, as independent devices' clocks are; `aligned` sends every
unit's frame at the same instant instead (one burst a period: the last frame of a burst waits for all the others).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import http.client
import itertools
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from msgspec import structs

from linewatch.core.commandline import UsageError
from linewatch.core.console import out
from linewatch.core.contract import ServiceStats, alarm_event_decoder, encoder, scores_decoder, telemetry_decoder
from linewatch.core.heap import collector_paused
from linewatch.core.kafka import TopicReader, aiokafka_security, ensure_topics
from linewatch.core.plant import PlantModel, read_plant
from linewatch.core.services import PIPELINE
from linewatch.core.settings import DEFAULT_PLANT_FILE, KafkaSettings
from linewatch.services.alerter.rules import ConditionRule, load_rules, write_rules
from linewatch.services.gateway.forwarder import LINGER_MS as GATEWAY_LINGER_MS
from linewatch.services.simulator.runner import KafkaPublisher, RunPlan, run
from linewatch.simulation.faults import plan_injection
from linewatch.storage.measurements import ANOMALY
from linewatch.tools.bench import MACHINE, cpu_seconds, machine_seconds, pid_of
from linewatch.tools.devstack import DevStack, free_port
from linewatch.tools.drill import pipeline_env, train_into, wait_quiet
from linewatch.tools.launcher import ServiceProcess
from linewatch.tools.plantfile import write

WARM_UP_S = 10.0
WINDOW_S = 10.0
TRAIN_SAMPLES = 3600  # per unit and lot
TARGET_S = 0.25  # the p99: frames slower than this are traced hop by hop
# Step faults on this many units of each class that has one, started apart over the run's middle third: one unit a
# class gave two alarm events a run, too few for a p99.
FAULTED_UNITS = 8
# The live capacity search: steps of live load, halving the range in log scale (five steps from 1/16 of the backlog
# rate to all of it: within 9 %); a step kept up if its median latency did not grow (keeps_up).
SEARCH_STEPS = 5
STEP_S = 20.0
STEP_DRAIN_S = 60.0
KEEPS_UP_P50_S = 1.0
KEEPS_UP_GROWTH_S = 0.2
STOLEN_NOTE = 0.1  # of a core, in any 10 s of the minute
QUIET_S = 2.0  # a live run ends once the writer stored nothing new this long after its last frame was due

# influxd 1.6 syncs its WAL on every write; on this machine's shared disk some writes took 100-180 ms (none on tmpfs),
# and every score behind them waited (docs/benchmarks.md, "influxd's files in memory"). In memory, as the dev
# broker's storage is, the figure is the pipeline's; `--influx-dir` on disk puts the disk back in.
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 (influxd gets a private mkdtemp directory inside it)
SHARED_MEMORY_MIN_FREE = 2 << 30  # a container's /dev/shm is often 64 MB: too small for a run's influxd files


def memory_dir() -> Path | None:
    """Shared memory where the machine has it with room to spare, else None (the system's temp dir)."""
    with contextlib.suppress(OSError):
        if shutil.disk_usage(SHARED_MEMORY).free >= SHARED_MEMORY_MIN_FREE:
            return SHARED_MEMORY
    return None


def bench_plant(plant: PlantModel, rate_hz: float, copies: int) -> PlantModel:
    """The plant sampled at `rate_hz`, each line's equipment `copies` times over (ids suffixed .2, .3, ...),
    with no settle time and the furnaces holding their soak: a benchmark of minutes has no time to settle, and
    trains on minutes, so a model that saw one phase of a 2.3-h ramp/soak programme alarmed on the others."""
    document = plant.model_dump(mode="json", by_alias=True)
    document["sample_period_s"] = 1.0 / rate_hz
    for equipment_class in document["classes"].values():
        equipment_class["settle_s"] = 0.0
        for sensor in equipment_class["sensors"].values():
            if sensor.get("profile") == "ramp_soak":
                sensor["profile"] = None
    for line in (line for area in document["areas"] for line in area["lines"]):
        for group in line["equipment"]:
            group["ids"] += [f"{unit}.{copy}" for copy in range(2, copies + 1) for unit in group["ids"]]
    return PlantModel.model_validate(document)


def with_units(plant: PlantModel, keep: set[str]) -> PlantModel:
    document = plant.model_dump(mode="json", by_alias=True)
    for line in (line for area in document["areas"] for line in area["lines"]):
        for group in line["equipment"]:
            group["ids"] = [unit for unit in group["ids"] if unit in keep]
            group["sources"] = {unit: s for unit, s in group["sources"].items() if unit in keep}
        line["equipment"] = [group for group in line["equipment"] if group["ids"]]
    return PlantModel.model_validate(document)


def spread_units(plant: PlantModel, count: int) -> list[str]:
    """`count` units taken round-robin over the classes, so every class's model and rules are in the path;
    classes with a step fault in the catalogue first (they make the alarms)."""
    stepped = {f.equipment_class for f in plant.faults.values() if f.shape == "step"}
    by_class: dict[str, list[str]] = defaultdict(list)
    for equipment in sorted(plant.equipment, key=lambda e: e.equipment_class not in stepped):
        by_class[equipment.equipment_class].append(equipment.id)
    chosen: list[str] = []
    while len(chosen) < min(count, len(plant.equipment)):
        for units in by_class.values():
            if units and len(chosen) < count:
                chosen.append(units.pop(0))
    return chosen


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else math.nan


class WriteRelay:
    """An HTTP relay in front of InfluxDB that notes when each write was acknowledged (2xx) and what it carried,
    once `armed`: the moment a score is in InfluxDB, without querying it."""

    def __init__(self, upstream_port: int) -> None:
        self.armed = False
        self.acknowledged: list[tuple[float, bytes]] = []  # (when InfluxDB answered 2xx, the line protocol body)
        self.write_s: list[float] = []  # how long InfluxDB took to answer each write, once armed
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the writer's connection alive
            upstream: http.client.HTTPConnection | None = None

            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                asked = time.time()
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = self.upstream.getresponse()
                answer = response.read()
                if relay.armed and self.path.startswith("/write") and response.status < 300:
                    relay.acknowledged.append((time.time(), body))
                    relay.write_s.append(time.time() - asked)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = relay

            def log_message(self, format: str, *args: Any) -> None:  # one line a write: no
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# An active score's line: its series (tags hold no spaces: names are restricted) and its timestamp.
_ACTIVE_SCORE = re.compile(rb"^" + ANOMALY.encode() + rb",(\S*role=active\S*) .* (\d+)$", re.MULTILINE)
_EQUIPMENT_TAG = re.compile(rb"(?:^|,)equipment=([^,]+)")


def stored_scores(acknowledged: list[tuple[float, bytes]]) -> list[tuple[float, dict[str, list[float]]]]:
    """Per acknowledged write: when, and each unit's active scores' sample times in it (seconds)."""
    writes = []
    for at, body in acknowledged:
        units: dict[str, list[float]] = defaultdict(list)
        for series, ts in _ACTIVE_SCORE.findall(body):
            found = _EQUIPMENT_TAG.search(series)
            if found:
                units[found.group(1).decode()].append(int(ts) / 1e9)
        if units:
            writes.append((at, dict(units)))
    return writes


def measure_capacity(
    kafka: KafkaSettings,
    plant: PlantModel,
    env: dict[str, str],
    run_dir: Path,
    samples: int,
    frame_samples: int,
    services: list[ServiceProcess],
) -> float:
    """Pre-fill the raw topic with past samples, start the pipeline on it (into `services`, which the caller stops
    however this ends), and take its steady rate."""
    span_s = samples / len(plant.equipment) * plant.sample_period_s
    publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
    plan = RunPlan(start_s=time.time() - span_s - 120, duration_s=span_s, frame_samples=frame_samples, speed=None)
    run(plant, plan, publisher.send_frame)
    publisher.close()
    scored = f"points_written.{kafka.topics.scores}"
    progress: list[tuple[float, int]] = []

    def on_stats(stats: ServiceStats) -> None:
        if stats.service == "writer" and stats.counters.get(scored, 0) > (progress[-1][1] if progress else 0):
            progress.append((stats.at.timestamp(), stats.counters[scored]))

    for name in PIPELINE:
        services.append(ServiceProcess(name, env, run_dir / f"{name}.log").start())
    pids = {service.name: service.pid for service in services}
    cpu: list[dict[str, float]] = []

    def on_progress(stats: ServiceStats) -> None:
        on_stats(stats)
        if len(progress) == 1 and not cpu:
            cpu.append(cpu_seconds(pids))

    wait_quiet(kafka, services, quiet_s=3.0, timeout_s=600.0, on_stats=on_progress)
    if len(progress) < 3:
        raise UsageError(f"the backlog was stored too fast to measure its rate: give a larger --prefill ({run_dir})")
    (first_at, first), (last_at, last) = progress[0], progress[-1]
    used = cpu_seconds(pids)
    out(
        f"capacity    {last - first:,} scored samples stored in {last_at - first_at:.1f} s; CPU a sample: "
        + ", ".join(f"{name} {(used[name] - cpu[0][name]) / (last - first) * 1e6:.0f} us" for name in pids)
    )
    return (last - first) / (last_at - first_at)


def fault_schedule(plant: PlantModel, seconds: float) -> dict[str, tuple[str, float]]:
    """Each faulted unit of a live run of `seconds`: its step fault and when it starts, in seconds from the run's
    start. Each step fault of the catalogue goes on up to FAULTED_UNITS units of its class, spread over the class's
    units, and they start apart over the run's middle third."""
    schedule = {}
    for name, fault in plant.faults.items():
        units = [e.id for e in plant.equipment if e.equipment_class == fault.equipment_class]
        if fault.shape == "step" and units:
            faulted = units[:: -(-len(units) // FAULTED_UNITS)]
            for k, unit in enumerate(faulted):
                schedule[unit] = (name, seconds / 3 * (1 + k / len(faulted)))
    return schedule


def unalarmed(schedule: dict[str, tuple[str, float]], alarmed: set[str]) -> str | None:
    """The line naming the faulted units with no alarm event, their fault and its start: a fault that starts late,
    or acts only in part of a unit's cycle, can outlast the run before its rule's on-delay is met."""
    missed = [f"{unit} ({name} from {at_s:.0f} s)" for unit, (name, at_s) in schedule.items() if unit not in alarmed]
    return "alarms      no alarm event on faulted units: " + ", ".join(missed) if missed else None


def live_frames(
    plant: PlantModel, seconds: float, frame_samples: int, seed: int, aligned: bool = False
) -> list[tuple[float, str, bytes]]:
    """(last sample's time, unit, payload) of `seconds` of the plant from two seconds after it is made, with the
    step faults of `fault_schedule`; unless `aligned`, unit k of n is shifted by k/n of a frame's period."""
    provisional = time.time() + 86_400  # shifted to the real start once made (making them takes a while)
    rng = np.random.default_rng(seed)
    injections = [
        plan_injection(plant, name, unit, provisional + start_s, rng)
        for unit, (name, start_s) in fault_schedule(plant, seconds).items()
    ]
    made: list[bytes] = []
    plan = RunPlan(provisional, seconds, frame_samples, speed=None, seed=seed, injections=injections)
    run(plant, plan, lambda _key, payload, _ts: made.append(payload))
    start_s = time.time() + 2.0
    period_s = frame_samples * plant.sample_period_s
    units = [equipment.id for equipment in plant.equipment]
    phase = {unit: 0.0 if aligned else k / len(units) * period_s for k, unit in enumerate(units)}
    frames = []
    for payload in made:
        frame = telemetry_decoder.decode(payload)
        shift = timedelta(seconds=start_s - provisional + phase[frame.equipment_id])
        moved = structs.replace(frame, samples=[structs.replace(s, ts=s.ts + shift) for s in frame.samples])
        frames.append((moved.samples[-1].ts.timestamp(), moved.equipment_id, encoder.encode(moved)))
    frames.sort(key=lambda f: f[0])
    return frames


async def _publish(
    kafka: KafkaSettings, frames: list[tuple[float, str, bytes]], stop: threading.Event, late: list[float]
) -> None:
    """Each frame sent once its last sample is due (how late each send was goes to `late`). aiokafka in one event
    loop (kafka-python cost twice the CPU a send, on the cores it measures), sending as the gateway does: frames due
    within its linger share a batch (each alone, the dev broker's growth and the score p99 were larger,
    docs/benchmarks.md); the linger counts in every frame's latency."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=GATEWAY_LINGER_MS, **aiokafka_security(kafka)
    )
    await producer.start()
    try:
        sent = []
        for due, unit, payload in frames:
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if stop.is_set():
                return
            sent.append(await producer.send(kafka.topics.raw, payload, key=unit.encode(), timestamp_ms=int(due * 1000)))
            late.append(time.time() - due)
        await asyncio.gather(*sent)  # a frame the broker refused fails the run, as it would fail its figures
    finally:
        await producer.stop()


def read_back(kafka: KafkaSettings, topic: str, on_record: Callable[[Any], None]) -> None:
    """Every record of `topic` to `on_record`, from its start until a second passes with nothing new: after a run,
    so no reader loads the broker while the latency is measured."""
    reader = TopicReader(kafka, topic)
    try:
        reader.read_until_quiet(on_record, 1.0)
    finally:
        reader.close()


def stamped_records(kafka: KafkaSettings, topic: str) -> list[tuple[bytes, float]]:
    """(value, the record's timestamp in seconds) of every record of `topic`, read back."""
    records: list[tuple[bytes, float]] = []
    read_back(kafka, topic, lambda record: records.append((record.value or b"", record.timestamp / 1e3)))
    return records


def send_times(kafka: KafkaSettings, topic: str, decoder: Any) -> dict[str, list[tuple[float, float]]]:
    """Per unit, in order: (its record's last sample, the record's timestamp) of every record of `topic`, read back
    until a second passes with nothing new, in seconds."""
    stamps: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def note(record: Any) -> None:
        frame = decoder.decode(record.value)
        if getattr(frame, "role", "active") == "active":  # a shadow model's scores are not what is stored
            stamps[frame.equipment_id].append((frame.samples[-1].ts.timestamp(), record.timestamp / 1e3))

    read_back(kafka, topic, note)
    return {unit: sorted(records) for unit, records in stamps.items()}


def passed_at(records: list[tuple[float, float]], due: float) -> float:
    """When a frame whose last sample is `due` passed a hop: the timestamp of the first record of its unit there
    that carries that sample or a later one (a record may carry several frames); nan if none did."""
    found = bisect.bisect_left(records, (due - 1e-6, -math.inf))
    return records[found][1] if found < len(records) else math.nan


def hop_times(
    latencies: list[tuple[str, float, float]], hops: dict[str, dict[str, list[tuple[float, float]]]]
) -> list[tuple[float, list[float]]]:
    """Per stored frame: its last sample, and the seconds each hop (in `hops`' order, then the write) took it."""
    traced = []
    for unit, due, latency in latencies:
        passed = [due, *(passed_at(records.get(unit, []), due) for records in hops.values()), due + latency]
        traced.append((due, [later - earlier for earlier, later in itertools.pairwise(passed)]))
    return traced


def dues_by_unit(frames: list[tuple[float, str, bytes]]) -> dict[str, list[float]]:
    """Each unit's frames' last samples, in order."""
    dues: dict[str, list[float]] = defaultdict(list)
    for due, unit, _ in frames:
        dues[unit].append(due)
    return dues


def score_latencies(
    writes: list[tuple[float, dict[str, list[float]]]], pending: dict[str, list[float]]
) -> list[tuple[str, float, float]]:
    """Every frame still `pending` whose last sample is at or before a unit's newest score in an acknowledged
    write is in InfluxDB from that acknowledgement on (taken off `pending`)."""
    latencies: list[tuple[str, float, float]] = []  # (unit, frame's last sample, seconds until it was stored)
    for at, units in writes:
        for unit, stamps in units.items():
            waiting, newest = pending.get(unit, []), max(stamps)
            while waiting and waiting[0] <= newest + 1e-6:
                due = waiting.pop(0)
                latencies.append((unit, due, at - due))
    return latencies


def slow_frames(traced: list[tuple[float, list[float]]], hop_names: list[str], gap_s: float = 1.0) -> list[str]:
    """Lines on the frames over TARGET_S: how many, which hop held each longest, each hop's median share of them,
    and whether they came together (bursts: slow frames less than `gap_s` apart, by their last sample)."""
    slow = sorted((due, taken) for due, taken in traced if sum(taken) > TARGET_S)
    if not slow:
        return [f"slow        no frame over {TARGET_S * 1000:.0f} ms"]
    held = [int(np.argmax(taken)) for _, taken in slow]
    bursts: list[list[float]] = []
    for due, _ in slow:
        if bursts and due - bursts[-1][-1] < gap_s:
            bursts[-1].append(due)
        else:
            bursts.append([due])
    longest = max(bursts, key=len)
    start = min(due for due, _ in traced)  # traced is in the order the writes came, not by due
    return [
        f"slow        {len(slow)} frames over {TARGET_S * 1000:.0f} ms ({len(slow) / len(traced):.1%}); "
        + "held longest by "
        + ", ".join(f"{name} {held.count(k)}" for k, name in enumerate(hop_names))
        + "; median ms in each hop: "
        + ", ".join(f"{name} {np.median([t[k] for _, t in slow]) * 1000:.0f}" for k, name in enumerate(hop_names)),
        f"slow        in {len(bursts)} bursts (frames under {gap_s:g} s apart); the largest: {len(longest)} frames "
        f"over {longest[-1] - longest[0]:.1f} s, from {longest[0] - start:.0f} s after the first timed frame "
        f"(due {datetime.fromtimestamp(longest[0], UTC).isoformat(timespec='milliseconds')}, as the logs' ts)",
    ]


@dataclass
class LiveRun:
    """What one stretch of live load gave: its frames and each stored frame's score latency."""

    frames: list[tuple[float, str, bytes]]
    latencies: list[tuple[str, float, float]]  # (unit, frame's last sample, seconds until it was stored)
    scored: set[tuple[str, int]]  # (unit, ms) of every active score stored: which frames were themselves scored
    late: list[float]
    unstored: int  # frames never seen stored before the run gave up waiting
    # ... of them, of units scored in the run: a queue not worked off (a unit that is not running is not scored)
    behind: int
    influx_write_s: list[float]  # how long InfluxDB took to answer each of the writer's writes
    # (wall time, each process's CPU seconds so far), about every half second: where the CPU went when
    cpu: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def timed_frames(self, begin_s: float, end_s: float = math.inf) -> list[tuple[str, float, float]]:
        """(unit, last sample, latency) of the frames due from `begin_s` until `end_s` whose own last sample was
        scored."""
        return [
            (unit, due, latency)
            for unit, due, latency in self.latencies
            if begin_s <= due < end_s and (unit, round(due * 1e3)) in self.scored
        ]

    def score_latencies(self, begin_s: float, end_s: float = math.inf) -> list[float]:
        return [latency for _, _, latency in self.timed_frames(begin_s, end_s)]


def run_live(
    kafka: KafkaSettings,
    relay: WriteRelay,
    frames: list[tuple[float, str, bytes]],
    wait_s: float,
    pids: dict[str, int] | None = None,
) -> LiveRun:
    """Publish `frames` paced and time each frame's score until the writer has stored nothing new for QUIET_S
    after the last frame was due, with every frame of the units it scored stored, or `wait_s` after the last was
    due."""
    stop = threading.Event()
    late: list[float] = []
    failed: list[BaseException] = []

    def publish() -> None:
        try:
            asyncio.run(_publish(kafka, frames, stop, late))
        except BaseException as exc:  # raised below, in the benchmark's thread: figures without their load are none
            failed.append(exc)

    publisher = threading.Thread(target=publish, daemon=True)
    # The benchmark's own full collections (53-107 ms) held its load generator and the relay of InfluxDB's answers.
    with collector_paused():
        taken, writes_from = len(relay.acknowledged), len(relay.write_s)
        relay.armed = True
        publisher.start()
        pending, latencies, scored = dues_by_unit(frames), [], set()
        scored_units: set[str] = set()
        last_write = time.time()
        cpu: list[tuple[float, dict[str, float]]] = []

        def sample_cpu() -> None:
            if pids:
                with contextlib.suppress(OSError):  # a process that died: its service's log says why; timing goes on
                    cpu.append((time.time(), cpu_seconds(pids) | machine_seconds()))

        sample_cpu()
        try:
            while time.time() < frames[-1][0] + wait_s and any(pending.values()) and not failed:
                done = not any(pending[unit] for unit in scored_units)
                if done and time.time() > max(frames[-1][0], last_write) + QUIET_S:
                    break
                time.sleep(0.5)
                sample_cpu()
                acknowledged = relay.acknowledged[taken:]
                taken += len(acknowledged)
                writes = stored_scores(acknowledged)
                if writes:
                    last_write = writes[-1][0]
                    scored_units.update(unit for _, units in writes for unit in units)
                latencies += score_latencies(writes, pending)
                # Only frames whose own last sample was scored count (a unit's first frames fill its window).
                scored |= {
                    (unit, round(ts * 1e3)) for _, units in writes for unit, stamps in units.items() for ts in stamps
                }
        finally:
            stop.set()
            publisher.join(30)
    if failed:
        raise failed[0]
    behind = sum(len(pending[unit]) for unit in scored_units)
    unstored = sum(map(len, pending.values()))
    return LiveRun(frames, latencies, scored, late, unstored, behind, relay.write_s[writes_from:], cpu)


def by_window(run: LiveRun, begin_s: float, window_s: float) -> list[tuple[float, list[float], dict[str, float]]]:
    """From `begin_s` to the last frame, each `window_s`: its start, the score latencies of the frames due in it, and
    each process's share of a core over it (from the CPU samples nearest its ends; none without samples)."""
    rows = []
    start = begin_s
    while start <= run.frames[-1][0]:
        end = start + window_s
        share: dict[str, float] = {}
        if len(run.cpu) > 1:
            (t0, used0), (t1, used1) = (min(run.cpu, key=lambda sample: abs(sample[0] - at)) for at in (start, end))
            if t1 > t0:
                share = {name: (used1[name] - used0[name]) / (t1 - t0) for name in used1}
        rows.append((start, run.score_latencies(start, end), share))
        start = end
    return rows


def stolen_note(shares: list[dict[str, float]]) -> str | None:
    """A line for a minute in which the hypervisor took a tenth of a core or more (steal): every process then waits
    for its turn at once, and the figures say more of the machine than of the pipeline (docs/benchmarks.md, "a
    machine the hypervisor takes")."""
    stolen = [share["steal"] for share in shares if "steal" in share]
    if not stolen or max(stolen) < STOLEN_NOTE:
        return None
    return (
        f"note        the hypervisor took {min(stolen):.0%} to {max(stolen):.0%} of a core in the minute (steal): "
        "every process waited for its turn, so these figures are the machine's more than the pipeline's"
    )


def keeps_up(run: LiveRun, step_s: float) -> tuple[bool, float, float]:
    """Whether the pipeline kept up with a step of live load, how much the median latency grew from the step's
    second quarter to its last, and the last quarter's median. Under its capacity the latency stays flat (higher
    near it, but flat); above it the queue, and so the latency, grows all the time (2 % over it adds 0.2 s between
    those quarters of a 20-s step). Kept up: every frame of the units scored stored, the growth under
    KEEPS_UP_GROWTH_S and the last quarter's median under KEEPS_UP_P50_S."""
    start = run.frames[0][0]

    def median_between(begin: float, end: float) -> float:
        values = run.score_latencies(start + begin * step_s, start + end * step_s)
        return float(np.median(values)) if values else math.inf

    second, last = median_between(0.25, 0.5), median_between(0.75, 1.0)
    growth = last - second
    return run.behind == 0 and growth <= KEEPS_UP_GROWTH_S and last <= KEEPS_UP_P50_S, growth, last


def sustainable_rate(
    kafka: KafkaSettings,
    relay: WriteRelay,
    plant: PlantModel,
    rate_hz: float,
    frame_samples: int,
    ceiling: float,
    aligned: bool,
    services: list[ServiceProcess],
) -> float:
    """The highest live load the pipeline keeps up with (its sustainable throughput), searched by halving in log
    scale between a sixteenth of `ceiling` (the backlog rate, which a live stream does not reach: each frame
    comes alone, so what a service pays a batch it pays a frame) and `ceiling`."""
    low, high, passed = ceiling / 16, ceiling, False
    for step in range(SEARCH_STEPS):
        units = spread_units(plant, max(1, round(math.sqrt(low * high) / rate_hz)))
        load = len(units) * rate_hz
        frames = live_frames(with_units(plant, set(units)), STEP_S, frame_samples, seed=10 + step, aligned=aligned)
        live = run_live(kafka, relay, frames, wait_s=STEP_DRAIN_S)
        ok, growth, last = keeps_up(live, STEP_S)
        out(
            f"  step {step + 1}    {load:>7,.0f} samples/s for {STEP_S:g} s: median latency {last * 1000:,.0f} ms "
            f"in the last quarter, {growth * 1000:+,.0f} ms on the second; {live.behind} frames not stored: "
            f"{'kept up' if ok else 'fell behind'}"
        )
        if ok:
            low, passed = load, True
        else:
            high = load
        wait_quiet(kafka, services, quiet_s=2.0, timeout_s=STEP_DRAIN_S)  # a step that fell behind left a queue
        if ok and len(units) == len(plant.equipment):
            out("note        every unit of the plant kept up: the live capacity is more; raise --copies to find it")
            break
    if not passed:
        out(f"note        no step kept up: {low:,.0f} samples/s (a sixteenth of the backlog rate) is not verified")
    return low


@contextlib.contextmanager
def pipeline(
    run_dir: Path,
    reference: PlantModel,
    plant: PlantModel,
    rate_hz: float,
    prefill: int,
    frame_samples: int,
    partitions: int,
    influx_parent: Path | None,
) -> Iterator[tuple[KafkaSettings, WriteRelay, float, list[ServiceProcess], dict[str, int]]]:
    """A fresh stack with a model per class and the four services, warmed up on a backlog of `prefill` samples
    whose rate it prints; stopped on leaving. Also yields the processes' pids by name (broker, influxd, services,
    this benchmark)."""
    run_dir.mkdir()
    with DevStack(influx_parent=influx_parent) as stack:
        relay = WriteRelay(stack.influxd.http_port)
        env = pipeline_env(stack, run_dir) | {
            "LINEWATCH_PLANT_FILE": str(run_dir.parent / "plant.yaml"),
            "LINEWATCH_RULES_FILE": str(run_dir.parent / "rules.yaml"),
            "LINEWATCH_STATS_INTERVAL_S": "0.5",
            "LINEWATCH_INFLUX__URL": relay.url,
            "LINEWATCH_KAFKA__PARTITIONS": str(partitions),
        }
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap, partitions=partitions)
        ensure_topics(kafka, kafka.topics.all())
        # One model per class, trained on the reference units only (the copies are more of the same), on two lots:
        # the mills' two recipes.
        train_into(
            bench_plant(reference, rate_hz, 1),
            Path(env["LINEWATCH_REGISTRY"]),
            env["LINEWATCH_MODEL_SIGNING_KEY"].encode(),
            TRAIN_SAMPLES / rate_hz / 3600,
            1,
            lots=2,
        )
        services: list[ServiceProcess] = []
        try:
            backlog = measure_capacity(kafka, plant, env, run_dir, prefill, frame_samples, services)
            out(
                f"capacity    backlog: {backlog:,.0f} samples/s scored and stored "
                f"({prefill:,} samples through all four services)"
            )
            servers = {"broker": pid_of(stack.broker.process), "influxd": pid_of(stack.influxd.process)}
            # The benchmark itself (its producer and relay) shares the cores: its CPU is shown too.
            pids = servers | {service.name: service.pid for service in services} | {"bench": os.getpid()}
            yield kafka, relay, backlog, services, pids
        finally:
            for service in services:  # also when the capacity measurement failed: none is left running
                service.stop()
            relay.close()


def bench_latency(
    load_share: float,
    seconds: float,
    rate_hz: float,
    frame_samples: int,
    prefill: int,
    copies: int,
    aligned: bool = False,
    load_samples_per_s: float | None = None,
    capacity_from: str = "live",
    partitions: int = 1,
    influx_parent: Path | None = None,
) -> int:
    """`load_samples_per_s`: that load instead of `load_share` of the capacity (no search for the live capacity:
    half of it moves with the machine and the settings, a fixed load compares them). `capacity_from`: "live",
    the highest live load the pipeline keeps up with, or "backlog", its rate through a pre-filled topic.
    `influx_parent`: where influxd's files go (None: `memory_dir()`)."""
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-latency-"))
    reference = read_plant(DEFAULT_PLANT_FILE)
    plant = bench_plant(reference, rate_hz, copies)
    write(plant.model_dump(mode="json", by_alias=True), run_dir / "plant.yaml")
    # The backlog has every unit and the timed load a share of them: the rest fall silent by the benchmark's
    # design, and their no-data alarms would be a burst of work in the timed minute that no plant has.
    rules = load_rules()
    silent_ok = rules.conditions | {"no_data": ConditionRule(on_delay_s=86_400.0)}
    write_rules(rules.model_copy(update={"conditions": silent_ok}), run_dir / "rules.yaml")
    influx_parent = influx_parent or memory_dir()
    shape = (reference, plant, rate_hz, prefill, frame_samples, partitions, influx_parent)
    out(f"influxd     data and WAL under {influx_parent or tempfile.gettempdir()}")
    search = load_samples_per_s is None and capacity_from == "live"
    if search:
        # On a stack of its own: the search's steps fill the broker's logs, which makes its fetches dearer (tansu
        # 84-86 % against 61 % at one load; `linewatch bench broker`), and leave the rules' alarms active.
        with pipeline(run_dir / "search", *shape) as (kafka, relay, backlog, services, _):
            capacity = sustainable_rate(kafka, relay, plant, rate_hz, frame_samples, backlog, aligned, services)
        out(f"capacity    live: {capacity:,.0f} samples/s kept up with ({capacity / backlog:.0%} of the backlog rate)")
    with pipeline(run_dir / "latency", *shape) as (kafka, relay, backlog, services, pids):
        if not search:
            capacity = backlog
        wanted = capacity * load_share if load_samples_per_s is None else load_samples_per_s
        units = spread_units(plant, max(1, round(wanted / rate_hz)))
        load = len(units) * rate_hz
        if load < wanted * 0.9:
            out(f"note        {len(plant.equipment)} units are too few for the load asked: raise --copies")
        out(
            f"load        {load:,.0f} samples/s: {len(units)} units at {rate_hz:g} Hz, {frame_samples} samples a "
            f"frame ({frame_samples / rate_hz * 1000:.0f} ms), for {seconds:g} s"
        )
        live_plant = with_units(plant, set(units))
        frames = live_frames(live_plant, seconds, frame_samples, seed=3, aligned=aligned)
        live = run_live(kafka, relay, frames, wait_s=30.0, pids=pids)
        time.sleep(2.0)  # the last alarm events
        alarm_records = stamped_records(kafka, kafka.topics.alarms)
        hops = {
            "validator": send_times(kafka, kafka.topics.valid, telemetry_decoder),
            "scorer": send_times(kafka, kafka.topics.scores, scores_decoder),
        }
    counted_from = frames[0][0] + WARM_UP_S
    score = live.score_latencies(counted_from)
    sent_at = dues_by_unit(frames)
    # An alarm event is on Kafka from when the alerter sent it: its record's timestamp, which the alerter's producer
    # sets as it sends (Kafka acknowledges it one produce round trip later).
    alarm = []
    schedule = fault_schedule(live_plant, seconds)
    faulted = set(schedule)
    alarmed: Counter[str] = Counter()  # timed events a unit: the faults' alarms apart from any others
    elsewhere: Counter[str] = Counter()  # the others, by class, condition and sensor: what to look into
    for value, stamped in alarm_records:
        event = alarm_event_decoder.decode(value)
        if event.kind == "transition" and event.user is None and event.ts.timestamp() >= counted_from:
            dues = sent_at[event.equipment_id]
            carried = bisect.bisect_left(dues, event.ts.timestamp() - 1e-6)  # the frame that carried its sample
            if carried < len(dues):
                alarmed[event.equipment_id] += 1
                if event.equipment_id not in faulted:
                    elsewhere[" ".join(filter(None, (event.equipment_class, event.condition, event.sensor)))] += 1
                alarm.append(stamped - dues[carried])
    traced = hop_times(live.timed_frames(counted_from), hops)
    hop_names = [*hops, "writer"]
    hop_rows = [(f"  {name}", [taken[k] for _, taken in traced]) for k, name in enumerate(hop_names)]
    sent = [t for (due, _, _), t in zip(frames, live.late, strict=False) if due >= counted_from]
    # The writer waits for InfluxDB's answer: how long each write took is part of the scores' latency (a row of
    # writes, not frames).
    rows = [
        ("sent", sent),
        ("in InfluxDB", score),
        *hop_rows,
        ("alarm event", alarm),
        ("write", live.influx_write_s),
    ]
    for name, values in rows:
        out(
            f"  {name:<12} {len(values):>6} p50 {percentile_ms(values, 50):5.0f} ms  "
            f"p99 {percentile_ms(values, 99):5.0f} ms  max {percentile_ms(values, 100):5.0f} ms"
        )
    for line in slow_frames(traced, hop_names):
        out(line)
    # The dev broker's fetches cost it more the longer its partitions' logs (`linewatch bench broker`): over a run
    # at one load its CPU grows, and the latency with it. Each stretch shows how much.
    columns = [*pids, *MACHINE]
    out(f"by {WINDOW_S:g} s     frames  score p50    p99   share of a core: " + " ".join(f"{n:>9}" for n in columns))
    windows = by_window(live, counted_from, WINDOW_S)
    for start, latencies, share in windows:
        out(
            f"  {start - live.frames[0][0]:>3.0f} s    {len(latencies):>6}  {percentile_ms(latencies, 50):6.0f} ms "
            f"{percentile_ms(latencies, 99):6.0f} ms                  "
            + " ".join(f"{share[name]:>9.0%}" if name in share else f"{'':>9}" for name in columns)
        )
    if note := stolen_note([share for _, _, share in windows]):
        out(note)
    out(f"scores      {len(score):,} frames timed (last sample scored, after warm-up), {live.unstored} never seen")
    # A unit is scored only once its model's settle samples after its start are past: a class whose settle time
    # outlasts the run is in the load but not in the figure.
    unscored = {unit for _, unit, _ in live.frames} - {unit for unit, _ in live.scored}
    if unscored:
        classes = sorted({equipment.equipment_class for equipment in plant.equipment if equipment.id in unscored})
        out(f"unscored    {len(unscored)} units never scored in the run, of {', '.join(classes)}")
    out(
        f"alarms      {len(alarm)} alarm events timed (transitions the rules made) on {len(alarmed)} units: "
        f"{sum(alarmed[unit] for unit in faulted)} on {len(faulted & alarmed.keys())} of the {len(faulted)} faulted "
        f"units"
    )
    if missed := unalarmed(schedule, set(alarmed)):
        out(missed)
    if elsewhere:
        out("alarms      on units with no fault: " + ", ".join(f"{n} {what}" for what, n in elsewhere.most_common()))
    out(f"run directory (logs): {run_dir}")
    out(
        f"load_samples_per_s={load:.0f} score_p50_ms={percentile_ms(score, 50):.0f} "
        f"score_p99_ms={percentile_ms(score, 99):.0f} alarm_p50_ms={percentile_ms(alarm, 50):.0f} "
        f"alarm_p99_ms={percentile_ms(alarm, 99):.0f}"
    )
    return 0
