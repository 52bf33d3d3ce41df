"""Writer edge cases on the real influxd: refused points are dead-lettered, and the v2 write API works."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from support import SimulatorThread, per_sensor_mismatches, read_dead_letters, start_services, wait_for_counts

from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.simulator.runner import RunPlan
from linewatch.tools.devstack import DevStack, free_port
from linewatch.tools.launcher import ServiceProcess


def small_plan(plant: PlantModel, seconds: int, seed: int) -> RunPlan:
    """`seconds` of the plant a minute ago, within one lot: the simulator ends every unit's frame at a lot change
    too, so a window across one has a frame a unit more (CI at 18:05 UTC once counted 62 refused frames of 60)."""
    start = math.floor(time.time() - seconds - 60)
    lot_change = (start + seconds) // plant.lot_duration_s * plant.lot_duration_s
    if lot_change > start:
        start = int(lot_change) - seconds
    return RunPlan(start_s=start, duration_s=seconds, frame_samples=10, speed=None, seed=seed)


def test_points_influxdb_refuses_are_dead_lettered_and_the_rest_written(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, log_dir: Path
) -> None:
    plan = small_plan(plant, 300, seed=41)
    # Make dew_point a string field in this shard: every dry-room point will be a type conflict (400).
    conflict = f'telemetry,equipment=conflict dew_point="text" {int(plan.start_s) * 10**9}'
    import urllib.request

    request = urllib.request.Request(f"{stack.influxd.url}/write?db=linewatch", data=conflict.encode(), method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 204

    services = start_services(stack, log_dir, "validator", "writer")
    try:
        simulator = SimulatorThread(plant, kafka.bootstrap_servers, plan)
        simulator.start()
        manifest = simulator.result()
        dry_rooms = {e.id for e in plant.equipment if e.equipment_class == "dry_room"}
        expected = {eid: counts for eid, counts in manifest.expected_values.items() if eid not in dry_rooms}
        expected["conflict"] = {"dew_point": 1}
        stored = wait_for_counts(stack.influxd, expected, timeout_s=120, alive=lambda: all(s.alive() for s in services))
        assert per_sensor_mismatches(expected, stored) == []

        dry_frames = len(dry_rooms) * math.ceil(plan.duration_s / plan.frame_samples)
        letters = read_dead_letters(kafka, dry_frames)
        # At-least-once: a producer retry under load may repeat a letter; every refused frame is there, none other.
        assert len({letter.source_sha256 for letter in letters}) == dry_frames
        assert len(letters) <= dry_frames + 5
        assert {(letter.stage, letter.reason) for letter in letters} == {("writer", "influx_rejected")}
        assert {letter.source.key for letter in letters} == dry_rooms
        assert all("type" in letter.detail for letter in letters)
        assert all(letter.source.topic == kafka.topics.valid for letter in letters)
    finally:
        for service in services:
            service.stop()


@pytest.fixture
def v2_gateway(stack: DevStack) -> Iterator[str]:
    """InfluxDB's v2 write endpoint in front of the real 1.6.7 server, as 1.8+ provides it natively
    (/api/v2/write, bucket -> database). It checks what influxdb-client sends, then forwards the body."""
    port = free_port()
    seen: list[str] = []

    async def write(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Token s3cret":
            return web.json_response({"code": "unauthorized"}, status=401)
        if request.query.get("org") != "plant" or request.query.get("precision") != "ns":
            return web.json_response({"code": "invalid", "message": dict(request.query)}, status=400)
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        seen.append(request.query["bucket"])
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{stack.influxd.url}/write", params={"db": request.query["bucket"], "precision": "ns"}, data=body
            ) as upstream,
        ):
            return web.Response(status=upstream.status, body=await upstream.read())

    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    assert seen and set(seen) == {"linewatch"}
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_writer_v2_api_through_influxdb_client(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, log_dir: Path, v2_gateway: str
) -> None:
    env = stack.service_env() | {
        "LINEWATCH_INFLUX__API": "v2",
        "LINEWATCH_INFLUX__URL": v2_gateway,
        "LINEWATCH_INFLUX__ORG": "plant",
        "LINEWATCH_INFLUX__BUCKET": "linewatch",
        "LINEWATCH_INFLUX__TOKEN": "s3cret",
    }
    services = [
        ServiceProcess("validator", env, log_dir / "validator.log").start(),
        ServiceProcess("writer", env, log_dir / "writer.log").start(),
    ]
    try:
        simulator = SimulatorThread(plant, kafka.bootstrap_servers, small_plan(plant, 200, seed=51))
        simulator.start()
        manifest = simulator.result()
        stored = wait_for_counts(
            stack.influxd, manifest.expected_values, timeout_s=120, alive=lambda: all(s.alive() for s in services)
        )
        assert per_sensor_mismatches(manifest.expected_values, stored) == []
        assert "s3cret" not in (log_dir / "writer.log").read_text()
    finally:
        for service in services:
            service.stop()
