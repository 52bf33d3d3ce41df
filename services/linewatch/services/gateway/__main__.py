"""`linewatch service gateway` (`python -m linewatch.services.gateway`): OPC UA and MQTT (Sparkplug B, JSON) into
telemetry frames on the raw topic, through an on-disk store-and-forward buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from linewatch.core import logs
from linewatch.core.commandline import exit_with
from linewatch.core.health import beat, start_watch
from linewatch.core.plant import PlantModel, read_plant
from linewatch.core.stats import StatsCounter
from linewatch.core.stopping import begin_stop, stop_on_signals
from linewatch.services.gateway.buffer import Buffer
from linewatch.services.gateway.forwarder import Forwarder
from linewatch.services.gateway.frames import Assembler, bindings
from linewatch.services.gateway.mqtt import JsonTopics, MqttSource
from linewatch.services.gateway.settings import GatewaySettings
from linewatch.services.gateway.sparkplug import SparkplugHost

SERVICE = "gateway"
log = logging.getLogger(__name__)


def _nothing_to_acknowledge(arrived_by: float) -> None:
    """OPC UA alone: a server that was away is read back (HistoryRead), it needs no acknowledgement."""


async def flush(
    assembler: Assembler,
    buffer: Buffer,
    forwarder: Forwarder,
    settings: GatewaySettings,
    stats: StatsCounter,
    stored: Callable[[float], None],
) -> None:
    """Held samples into frames, frames and dead letters into the buffer, every `flush_interval_s`; then
    `stored` learns that what arrived by the cutoff is on disk."""
    topics = settings.kafka.topics
    cutoff = time.monotonic() - settings.hold_s
    frames = assembler.drain(cutoff)
    records: list[tuple[str, bytes | None, bytes, int]] = [
        (topics.raw, frame.equipment_id.encode(), frame.payload, frame.values) for frame in frames
    ]
    letters = assembler.take_letters()
    stats.counters["dead_letters"] += len(letters)
    records += [(topics.deadletter, key, letter, 0) for key, letter in letters]
    if not records:
        stored(cutoff)
        return
    positions: dict[str, datetime] = {}
    for frame in frames:
        positions[frame.equipment_id] = max(frame.last_ts, positions.get(frame.equipment_id, frame.last_ts))
    dropped = buffer.put(records, positions)
    stats.counters["frames_buffered"] += len(frames)
    if dropped.records:
        stats.counters["values_dropped"] += dropped.values
        detail = (
            f"the store-and-forward buffer is full ({settings.buffer.max_bytes} bytes): dropped the oldest "
            f"{dropped.records} records ({dropped.values} values) of {', '.join(dropped.keys)[:500]}"
        )
        log.error("buffer full: oldest frames dropped", extra={"records": dropped.records, "values": dropped.values})
        assembler.reject("gateway-buffer", "buffer_overflow", detail, detail.encode(), SERVICE)
        report = assembler.take_letters()  # into the buffer now, as a shutdown's last flush may have no next one
        stats.counters["dead_letters"] += len(report)
        buffer.put([(topics.deadletter, key, letter, 0) for key, letter in report], {})
    stored(cutoff)
    forwarder.wake.set()


async def run(settings: GatewaySettings, plant: PlantModel) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop, settings.stop_within_s)  # its samples wait in the buffer on disk for the next start
    stats = StatsCounter(SERVICE)
    assembler = Assembler(plant, settings.frame_max_samples)
    buffer = Buffer(
        settings.buffer.path or settings.health.state_dir / "gateway-buffer.sqlite",
        settings.buffer.max_bytes,
        settings.buffer.replay_window_s,
    )
    topics = settings.kafka.topics
    forwarder = Forwarder(buffer, settings.kafka, [topics.raw, topics.deadletter], stats)
    tasks = [asyncio.create_task(forwarder.run(stop), name="forwarder")]
    sources = []
    if settings.opcua.endpoint:
        from linewatch.services.gateway.opcua import OpcUaSource  # asyncua takes a second to import: only if used

        opcua = OpcUaSource(settings.opcua, bindings(plant, "opcua"), assembler, stats, buffer.positions)
        tasks.append(asyncio.create_task(opcua.run(stop), name="opcua"))
        sources.append(f"opcua {settings.opcua.endpoint} ({len(opcua.points)} sensors)")
    stored = _nothing_to_acknowledge
    if settings.mqtt.host:
        spb, plain = bindings(plant, "sparkplug"), bindings(plant, "mqtt")
        host = SparkplugHost(spb, assembler, stats, settings.mqtt.rebirth_interval_s, buffer) if spb else None
        json_topics = JsonTopics(plain, assembler, stats, settings.mqtt.timestamp_field) if plain else None
        mqtt = MqttSource(settings.mqtt, host, json_topics, stats)
        tasks.append(asyncio.create_task(mqtt.run(stop), name="mqtt"))
        stored = mqtt.stored
        sources.append(f"mqtt {settings.mqtt.host}:{settings.mqtt.port} ({len(spb)} Sparkplug B, {len(plain)} JSON)")
    if not sources:
        log.error("no source configured: set LINEWATCH_OPCUA__ENDPOINT or LINEWATCH_MQTT__HOST")
    waiting, size = buffer.counts()
    log.info("gateway started", extra={"sources": sources, "buffered_records": waiting, "buffered_bytes": size})
    # The forwarder sends again what a broker that lost its state had acknowledged (no consumer position to lose):
    # the watch learns the ids at its first check.
    watch = start_watch(SERVICE, settings, stats, topic_ids={})
    tasks.append(asyncio.create_task(beat(watch.state), name="beat"))
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.flush_interval_s)
            await flush(assembler, buffer, forwarder, settings, stats, stored)
            stats.counters["buffered_records"], _ = buffer.counts()
            await forwarder.send_stats(topics.stats, SERVICE.encode(), stats.snapshot())
    finally:
        begin_stop(stop, settings.stop_within_s)  # already begun unless the loop failed: that stop is bounded too
        await flush(assembler, buffer, forwarder, settings.model_copy(update={"hold_s": 0.0}), stats, stored)
        watch.stop()
        for task in tasks:
            if task.get_name() == "beat":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        buffer.close()


def main() -> None:
    settings = GatewaySettings()
    logs.configure(SERVICE, settings.log_level)
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # INFO is a line per publish response
    plant = read_plant(settings.plant_file)
    asyncio.run(run(settings, plant))


if __name__ == "__main__":
    exit_with(main, f"linewatch service {SERVICE}")
