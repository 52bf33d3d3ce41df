"""The simulator's readings over equipment protocols instead of Kafka frames: the plant as an OPC UA server, or as
Sparkplug B edge nodes, for the gateway to read (`linewatch up --source opcua|sparkplug`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from linewatch.core.contract import telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.services.simulator.runner import Send

log = logging.getLogger(__name__)


def protocol_sink(
    protocol: str, plant: PlantModel, port: int, stop: threading.Event
) -> tuple[Send, Callable[[], None]]:
    """(send, close): `send` takes the simulator's frames and puts their samples on the protocol. A frame the
    simulator spoilt on purpose (malformed JSON) cannot be read back: it is logged and counted, not served."""
    spoilt = [0]

    def samples(payload: bytes) -> list[tuple[str, datetime, dict[str, float]]]:
        try:
            frame = telemetry_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            spoilt[0] += 1
            return []
        return [(frame.equipment_id, sample.ts, sample.values) for sample in frame.samples]

    if protocol == "sparkplug":
        from linewatch.simulation.sparkplug_edge import PlantEdgeNodes

        edge = PlantEdgeNodes(plant, "127.0.0.1", port)

        def send_sparkplug(key: str, payload: bytes, timestamp_ms: int) -> None:
            for equipment_id, ts, values in samples(payload):
                edge.publish(equipment_id, ts, values)

        return send_sparkplug, edge.close

    from linewatch.simulation.opcua_server import PlantServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="opcua-server", daemon=True)
    thread.start()
    # Two minutes of history covers a gateway's restart; asyncua keeps it in memory, a DataValue object a value.
    server = PlantServer(plant, port, history=timedelta(minutes=2))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)

    async def write(items: list[tuple[str, datetime, dict[str, float]]]) -> None:
        for equipment_id, ts, values in items:
            for sensor, value in values.items():
                await server.write(equipment_id, sensor, value, ts)

    def send_opcua(key: str, payload: bytes, timestamp_ms: int) -> None:
        asyncio.run_coroutine_threadsafe(write(samples(payload)), loop).result(60)

    def close() -> None:
        if spoilt[0]:
            log.info("spoilt frames not served over OPC UA", extra={"frames": spoilt[0]})
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)

    return send_opcua, close
