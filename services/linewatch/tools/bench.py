"""`linewatch bench pipeline`: simulator -> validator -> writer on the embedded stack, and in the same run
the InfluxDB line-protocol ceiling for the same points on the same influxd. `--full` puts the scorer (with a
model trained on simulated normal operation before the clock starts) and the alerter in the path too; the run
then ends when every service has worked off its input, and the rate is the samples over that whole time.

The simulator first loads the raw topic (timed on its own); the validator and writer then drain it. Their
steady-state throughput is taken from the writer's own stats (every 0.1 s here), telemetry points only,
from its first report with points to its first report with all of them, so process start-up is excluded;
the fill (validator's first record to the first point) is printed beside it. The ceiling writes the same
points, already formatted, in batches of 10k, one POST at a time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linewatch.core.console import out
from linewatch.core.contract import ServiceStats, telemetry_decoder
from linewatch.core.kafka import TopicReader, ensure_topics
from linewatch.core.services import PIPELINE, service
from linewatch.core.settings import InfluxSettings, KafkaSettings
from linewatch.storage.influx import InfluxWriter
from linewatch.storage.lineprotocol import TimestampCache, telemetry_lines
from linewatch.tools.devstack import DevStack
from linewatch.tools.launcher import ServiceProcess
from linewatch.tools.liveview import StatsReader

CEILING_BATCH_POINTS = 10_000


def read_topic(kafka: KafkaSettings, topic: str, samples: int, timeout_s: float = 120.0) -> list[bytes]:
    """Frames of `topic` until they hold `samples` samples (counted, since end offsets lie on Tansu)."""
    payloads: list[bytes] = []
    seen = [0]

    def keep(value: bytes) -> None:
        payloads.append(value)
        seen[0] += len(telemetry_decoder.decode(value).samples)

    reader = TopicReader(kafka, topic)
    deadline = time.monotonic() + timeout_s
    try:
        while seen[0] < samples and time.monotonic() < deadline:
            reader.read(keep, 0.2)
    finally:
        reader.close()
    return payloads


async def ceiling(url: str, database: str, payloads: list[bytes]) -> tuple[int, float]:
    timestamps = TimestampCache()
    lines = [line for payload in payloads for line in telemetry_lines(payload, timestamps)]
    bodies = [b"\n".join(lines[i : i + CEILING_BATCH_POINTS]) for i in range(0, len(lines), CEILING_BATCH_POINTS)]
    writer = InfluxWriter(InfluxSettings(url=url, database=database))
    started = time.perf_counter()
    for body in bodies:
        await writer.write(body)
    elapsed = time.perf_counter() - started
    await writer.close()
    return len(lines), elapsed


def simulate_into(env: dict[str, str], samples: int, frame_samples: int, log_path: Path) -> float:
    """Load the raw topic with the plant simulator at maximum speed; the seconds it took."""
    started = time.perf_counter()
    args = ("--samples", str(samples), "--max-speed", "--frame-samples", str(frame_samples))
    ServiceProcess("simulator", env, log_path, args).run(timeout_s=3600)
    return time.perf_counter() - started


def bench_pipeline(samples: int, frame_samples: int, full: bool = False, timeout_s: float = 900.0) -> int:
    from linewatch.tools.drill import pipeline_env, wait_quiet

    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-bench-"))
    names = PIPELINE if full else ("validator", "writer")
    with DevStack() as stack:
        # Reports every 0.1 s: with 1 s reports the window's ends would be up to a second off (about 10 %).
        env = (pipeline_env(stack, run_dir) if full else stack.service_env()) | {"LINEWATCH_STATS_INTERVAL_S": "0.1"}
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all())
        if full:
            train_apart(env)
            out("model       trained on 4 simulated hours of normal operation (before the clock starts)")

        simulate_s = simulate_into(env, samples, frame_samples, run_dir / "simulator.log")
        out(
            f"simulator   {samples:>10,} samples, {frame_samples} per Kafka record, loaded in "
            f"{simulate_s:5.1f} s  ({samples / simulate_s:,.0f}/s)"
        )

        last: dict[str, ServiceStats] = {}
        progress: list[tuple[float, int]] = []

        # Telemetry points only: the writer also stores every service's stats from its first second.
        telemetry_points = f"points_written.{kafka.topics.valid}"

        taken_at: list[float] = []  # the validator's first report with records taken
        topics = kafka.topics.model_dump()  # what each service takes in, the stats every service sends left out
        progress_counters = {name: service(name).progress_counters(topics) for name in names}
        moved: dict[str, int] = {}
        moved_at: dict[str, float] = {}  # per service: its last report in which its input counters moved

        def on_stats(stats: ServiceStats) -> None:
            last[stats.service] = stats
            if stats.service not in names:
                return
            taken = sum(stats.counters.get(counter, 0) for counter in progress_counters[stats.service])
            if taken != moved.get(stats.service):
                moved[stats.service], moved_at[stats.service] = taken, stats.at.timestamp()
            if stats.service == "validator" and stats.counters.get("records_in", 0) > 0 and not taken_at:
                taken_at.append(stats.at.timestamp())
            if stats.service == "writer" and stats.counters.get(telemetry_points, 0) > 0:
                progress.append((stats.at.timestamp(), stats.counters[telemetry_points]))

        services = [ServiceProcess(name, env, run_dir / f"{name}.log").start() for name in names]
        pids = {s.name: s.pid for s in services} | {
            "broker": pid_of(stack.broker.process),
            "influxd": pid_of(stack.influxd.process),
        }
        cpu_at_first: dict[str, float] = {}
        cpu_at_done: dict[str, float] = {}
        reader = StatsReader(kafka)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                reader.poll(on_stats, 0.1)
                if taken_at and not cpu_at_first:
                    cpu_at_first = cpu_seconds(pids)
                if progress and progress[-1][1] >= samples:
                    if full:  # then until the scorer and alerter have worked off theirs too
                        wait_quiet(kafka, services, 2.0, timeout_s, on_stats)
                    cpu_at_done = cpu_seconds(pids)
                    break
                if not all(s.alive() for s in services):
                    raise RuntimeError(f"a service died, see {run_dir}")
        finally:
            reader.close()
            for process in services:
                process.stop()
        if not progress or progress[-1][1] < samples:
            raise RuntimeError(f"pipeline did not write {samples} points within {timeout_s:.0f} s, see {run_dir}")
        # Steady state: from the writer's first report with points to its first report with all of them.
        first_at, first_points = progress[0]
        done_at, done_points = next(p for p in progress if p[1] >= samples)
        pipeline_rate = (done_points - first_points) / (done_at - first_at)
        if full:  # from the validator's first record to the last report in which any service moved
            done_at = max(moved_at.values())
            pipeline_rate = samples / (done_at - taken_at[0])

        payloads = read_topic(kafka, kafka.topics.valid, samples)
        stack.influxd.create_database("ceiling")
        points, seconds = asyncio.run(ceiling(stack.influxd.url, "ceiling", payloads))
        ceiling_rate = points / seconds

    for name in ("simulator", *names):
        if name in last:
            out(f"{name:<11} peak RSS {last[name].peak_rss_bytes / 2**20:7.1f} MiB")
    for name, seconds_at_done in cpu_at_done.items():
        used = seconds_at_done - cpu_at_first[name]
        out(f"{name:<11} CPU {used:5.1f} s  ({used / samples * 1e6:5.2f} us a sample, from the first record taken)")
    if full:
        out(
            f"pipeline    {samples:>10,} samples in {done_at - taken_at[0]:5.1f} s  (first record taken to the "
            f"last service done: {' + '.join(names)} + broker + influxd on {_cores()} cores)"
        )
    else:
        out(
            f"pipeline    {done_points - first_points:>10,} samples in {done_at - first_at:5.1f} s  "
            f"(steady state, validator + writer + broker + influxd on {_cores()} cores)"
        )
    out(
        f"fill        first point in InfluxDB {first_at - taken_at[0]:4.1f} s after the validator's first record; "
        f"with the fill {samples / (done_at - taken_at[0]):,.0f} samples/s"
    )
    out(
        f"ceiling     {points:>10,} points in {seconds:5.1f} s  (pre-formatted line protocol, "
        f"{CEILING_BATCH_POINTS:,} per POST, same influxd)"
    )
    out(
        f"pipeline_samples_per_s={pipeline_rate:.0f} influx_ceiling_points_per_s={ceiling_rate:.0f} "
        f"ratio={pipeline_rate / ceiling_rate:.2f}"
    )
    return 0


def train_apart(env: dict[str, str], hours: float = 4.0) -> None:
    """Train, sign and activate a model into the registry of `env`, in a process of its own: a child inherits its
    parent's peak RSS, which training here would inflate for every service started after it."""
    train = ("train", "--hours", str(hours), "--active")
    done = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", *train], env=os.environ | env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"training failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU time of each process so far (Linux /proc), to show where a run's CPU went."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


# The machine's idle and stolen time, beside the processes': on a shared VM the hypervisor runs other guests on our
# cores ("steal"), which no process's own CPU shows and which stalls every one of them.
MACHINE = ("idle", "steal")


def machine_seconds(proc_stat: str | None = None) -> dict[str, float]:
    """Idle (with I/O wait) and stolen CPU time so far, summed over the cores (Linux /proc/stat, first line)."""
    text = Path("/proc/stat").read_text() if proc_stat is None else proc_stat
    fields = [int(value) for value in text.split("\n", 1)[0].split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    return dict(zip(MACHINE, ((fields[3] + fields[4]) / ticks, fields[7] / ticks), strict=True))


def pid_of(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None, "the dev stack is running"
    return process.pid


def _cores() -> int:
    return len(os.sched_getaffinity(0))
