"""Issue 13: real equipment protocols into the pipeline. An asyncua server over TCP (200 variables changing every
second) and Debian's mosquitto with a Sparkplug B edge node, through the gateway, validator and writer into
InfluxDB: every value exactly once, with its source timestamp, across a broker outage and a gateway restart."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from support import influx_counts, read_dead_letters, self_signed_tls, wait_for_counts

from linewatch.core import sparkplug
from linewatch.core.health import EXIT_BROKER_STATE_LOST
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.settings import KafkaSettings
from linewatch.simulation.opcua_server import PlantServer
from linewatch.tools.devstack import DevStack, Mosquitto, free_port
from linewatch.tools.launcher import ServiceProcess, Supervisor

pytestmark = [pytest.mark.gateway, pytest.mark.slow]
T = TypeVar("T")


def synthetic_plant(units: int, sensors: int, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """A foreign plant: `units` units of one class with `sensors` sensors each."""
    return {
        "site": "site",
        "sources": sources or {},
        "classes": {
            "press": {
                "sensors": {f"s{i:02d}": {"unit": "bar", "normal": [0.0, 100.0]} for i in range(sensors)},
            }
        },
        "areas": [
            {
                "name": "area",
                "lines": [
                    {"name": "line", "equipment": [{"class": "press", "ids": [f"u{u:02d}" for u in range(units)]}]}
                ],
            }
        ],
    }


class ServerThread(threading.Thread):
    """The OPC UA server on an event loop of its own, as a plant's server would be: outside the gateway."""

    def __init__(self, plant: PlantModel) -> None:
        super().__init__(daemon=True)
        self.loop = asyncio.new_event_loop()
        self.server = PlantServer(plant, free_port())

    def run(self) -> None:
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def __enter__(self) -> ServerThread:
        logging.getLogger("asyncua").setLevel(logging.WARNING)  # a line per request otherwise
        self.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *_: object) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def linewatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", *args], capture_output=True, text=True, timeout=120
    )


def stored_times(stack: DevStack, equipment: str, sensor: str) -> list[int]:
    result = stack.influxd.query(f"SELECT \"{sensor}\" FROM telemetry WHERE equipment = '{equipment}'", "linewatch")
    series = result["results"][0].get("series", [])  # type: ignore[index]
    return [int(row[0]) for row in series[0]["values"] if row[1] is not None] if series else []


def test_opcua_values_arrive_once_with_source_times_across_broker_outage_and_gateway_restart(
    stack: DevStack, log_dir: Path
) -> None:
    plant = PlantModel.model_validate(synthetic_plant(units=10, sensors=20))
    rng = np.random.default_rng(3)
    written: Counter[tuple[str, str]] = Counter()
    times: list[datetime] = []
    with ServerThread(plant) as server:

        def publish_round() -> None:
            ts = datetime.fromtimestamp(round(time.time(), 3), UTC)
            times.append(ts)
            for (unit, sensor), value in zip(server.server.variables, rng.uniform(0, 100, 200), strict=True):
                server.call(server.server.write(unit, sensor, float(value), ts))
                written[(unit, sensor)] += 1

        # A draft from the server itself is what the whole pipeline runs on, unchanged.
        plant_file = log_dir / "discovered.yaml"
        drafted = linewatch("plant", "discover", server.server.endpoint, "-o", str(plant_file))
        assert drafted.returncode == 0, drafted.stderr
        checked = linewatch("plant", "validate", str(plant_file))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "200 sensors (200 with a opcua address" in checked.stdout
        discovered = load_plant(plant_file)
        assert {e.id for e in discovered.equipment} == {e.id for e in plant.equipment}

        publish_round()  # the subscription's first notification is this value, not the variables' initial one
        env = stack.service_env() | {
            "LINEWATCH_PLANT_FILE": str(plant_file),
            "LINEWATCH_OPCUA__ENDPOINT": server.server.endpoint,
            "LINEWATCH_BUFFER__PATH": str(log_dir / "gateway-buffer.sqlite"),
        }
        services = [ServiceProcess(n, env, log_dir / f"{n}.log").start() for n in ("gateway", "validator", "writer")]
        gateway = services[0]
        deadline = time.monotonic() + 60
        # A gateway that never ran has no position to read back from: it starts from the values current when it
        # subscribes. So the rounds start once it is connected.
        while "OPC UA connected" not in (log_dir / "gateway.log").read_text():
            assert time.monotonic() < deadline, "the gateway did not connect to the OPC UA server"
            time.sleep(0.2)
        supervisor = Supervisor(services, reset=stack.broker.restart, max_backoff_s=2.0, quiesce_s=10.0)
        try:
            start = time.monotonic()
            broker_down_at = gateway_killed = broker_back_at = None
            while (elapsed := time.monotonic() - start) < 50:
                publish_round()
                if elapsed > 6 and broker_down_at is None:
                    assert stack.broker.process is not None
                    stack.broker.process.kill()
                    stack.broker.process.wait(10)
                    broker_down_at = elapsed
                if elapsed > 14 and gateway_killed is None:
                    gateway.kill()  # SIGKILL while the broker is away: the buffer on disk must carry it
                    gateway_killed = elapsed
                if broker_down_at is not None and broker_back_at is None and elapsed - broker_down_at >= 30:
                    stack.broker.start()
                    broker_back_at = elapsed
                supervisor.check()
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))
            assert broker_back_at is not None and broker_down_at is not None
            expected = {(u, s): n for (u, s), n in written.items()}
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                supervisor.check()
                counts = influx_counts(stack.influxd)
                stored = {(u, s): n for u, sensors in counts.items() for s, n in sensors.items()}
                if sum(stored.values()) >= sum(expected.values()):
                    break
                time.sleep(2)
            logging.getLogger(__name__).info("caught up", extra={"after_rounds_s": round(time.monotonic() - start)})
            time.sleep(3)
            counts = influx_counts(stack.influxd)
            stored = {(u, s): n for u, sensors in counts.items() for s, n in sensors.items()}
            lost = {k: n - stored.get(k, 0) for k, n in expected.items() if stored.get(k, 0) < n}
            extra = {k: stored[k] - n for k, n in expected.items() if stored.get(k, 0) > n}
            # The broker came back empty: the consumers saw it (their positions were the old ones) and started again.
            restarted = {r.name for r in supervisor.restarts if r.exit_code == EXIT_BROKER_STATE_LOST}
            assert {"validator", "writer"} <= restarted, supervisor.restarts
            assert not lost, f"{sum(lost.values())} values lost, e.g. {list(lost.items())[:5]}"
            assert not extra, f"{sum(extra.values())} duplicates, e.g. {list(extra.items())[:5]}"
            assert len(expected) == 200 and sum(expected.values()) >= 200 * 45
            # Source timestamps, not arrival times: every round's time is a point of every node.
            want = [round(t.timestamp() * 1000) * 1_000_000 for t in times]
            for unit, sensor in [("u00", "s00"), ("u09", "s19"), ("u04", "s07")]:
                assert stored_times(stack, unit, sensor) == want
        finally:
            for process in services:
                process.stop()
    log = (log_dir / "gateway.log").read_text()
    # The outage is reported: by the broker watch at once; by the forwarder once a send or topic check fails,
    # which can come only after the broker is back (kafka-python's bootstrap waits up to 30 s).
    assert '"broker unreachable"' in log
    assert "gateway started" in log and log.count("gateway started") >= 2


def stored_once(stack: DevStack, expected: dict[tuple[str, str], int], timeout_s: float) -> dict[tuple[str, str], int]:
    """Values per (unit, sensor) in InfluxDB once as many as `expected` arrived, and a moment later."""
    nested: dict[str, dict[str, int]] = {}
    for (unit, sensor), count in expected.items():
        nested.setdefault(unit, {})[sensor] = count
    stored = wait_for_counts(stack.influxd, nested, timeout_s)
    return {(u, s): n for u, sensors in stored.items() for s, n in sensors.items()}


class EdgeNode:
    """A Sparkplug B edge node with two devices, published with paho as a PLC gateway would: births with aliases,
    alias-only data, sequence numbers, deaths; it answers a rebirth request with its births."""

    def __init__(self, port: int, plant: PlantModel) -> None:
        self.plant = plant
        self.seq = 0
        self.rebirths = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="edge-node")
        self.client.on_message = lambda client, userdata, message: self._command(message)
        self.client.on_connect = lambda client, *_: client.subscribe(sparkplug.topic("site", "NCMD", "line"), qos=1)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.aliases = {
            (e.id, s): 100 * n + i
            for n, e in enumerate(plant.equipment)
            for i, s in enumerate(plant.classes[e.equipment_class].sensors)
        }

    def _command(self, message: Any) -> None:
        payload = sparkplug.Payload.FromString(message.payload)
        if any(m.name == sparkplug.REBIRTH_METRIC and m.boolean_value for m in payload.metrics):
            self.rebirths += 1  # answered by the test's thread: one publisher, one clock

    def publish(self, kind: str, device: str | None, payload: Any, seq: bool = True) -> None:
        if seq:
            payload.seq = self.seq
            self.seq = (self.seq + 1) % 256
        topic = sparkplug.topic("site", kind, "line", device)
        self.client.publish(topic, payload.SerializeToString(), qos=1).wait_for_publish(10)

    def births(self) -> None:
        self.seq = 0
        node = sparkplug.Payload(timestamp=int(time.time() * 1000))
        node.metrics.add(name=sparkplug.BDSEQ_METRIC, datatype=sparkplug.INT64, long_value=1)
        node.metrics.add(name=sparkplug.REBIRTH_METRIC, datatype=sparkplug.BOOLEAN, boolean_value=False)
        self.publish("NBIRTH", None, node)
        for equipment in self.plant.equipment:
            self.publish("DBIRTH", equipment.id, self.data(equipment.id, names=True))

    def data(self, device: str, names: bool = False) -> Any:
        ms = int(time.time() * 1000)
        payload = sparkplug.Payload(timestamp=ms)
        for (unit, sensor), alias in self.aliases.items():
            if unit == device:
                metric = payload.metrics.add(
                    alias=alias, timestamp=ms, datatype=sparkplug.DOUBLE, double_value=alias / 7
                )
                if names:
                    metric.name = sensor
                self.sent[(unit, sensor)] += 1
        time.sleep(0.002)  # the next data message gets a later millisecond: a new sample, not the same one again
        return payload

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_sparkplug_births_data_gaps_and_deaths_store_every_metric_once(
    stack: DevStack, kafka: KafkaSettings, log_dir: Path
) -> None:
    document = synthetic_plant(units=2, sensors=5, sources={"sparkplug": "{site}/{line}/{equipment}/{sensor}"})
    plant_file = log_dir / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(document))
    plant = load_plant(plant_file)
    mosquitto = Mosquitto().start()
    try:
        env = stack.service_env() | {
            "LINEWATCH_PLANT_FILE": str(plant_file),
            "LINEWATCH_MQTT__HOST": "127.0.0.1",
            "LINEWATCH_MQTT__PORT": str(mosquitto.port),
            "LINEWATCH_MQTT__REBIRTH_INTERVAL_S": "0.5",
            "LINEWATCH_BUFFER__PATH": str(log_dir / "gateway-buffer.sqlite"),
            "LINEWATCH_HOLD_S": "2",  # the crash below surely finds values received but not yet on disk
        }
        services = [ServiceProcess(n, env, log_dir / f"{n}.log").start() for n in ("gateway", "validator", "writer")]
        edge = EdgeNode(mosquitto.port, plant)
        try:
            deadline = time.monotonic() + 30
            while "MQTT subscribed" not in (log_dir / "gateway.log").read_text():
                assert time.monotonic() < deadline, "the gateway did not subscribe at mosquitto"
                time.sleep(0.2)
            edge.births()
            for _ in range(20):
                for equipment in plant.equipment:
                    edge.publish("DDATA", equipment.id, edge.data(equipment.id))
            # The broker restarts (an upgrade; this one keeps no sessions, so first everything it holds is taken):
            # the gateway connects and subscribes again by itself.
            assert stored_once(stack, dict(edge.sent), 60) == dict(edge.sent)
            mosquitto.restart()
            deadline = time.monotonic() + 30
            while not (
                (log_dir / "gateway.log").read_text().count("MQTT subscribed") >= 2 and edge.client.is_connected()
            ):
                assert time.monotonic() < deadline, "the gateway did not reconnect to the restarted broker"
                time.sleep(0.2)
            for _ in range(5):
                for equipment in plant.equipment:
                    edge.publish("DDATA", equipment.id, edge.data(equipment.id))
            edge.seq += 3  # three messages the host never saw: it must ask for the births again
            edge.publish("DDATA", "u00", edge.data("u00"))
            deadline = time.monotonic() + 20
            while edge.rebirths == 0:
                assert time.monotonic() < deadline, "no rebirth request after a sequence gap"
                time.sleep(0.1)
            edge.births()
            for _ in range(10):
                for equipment in plant.equipment:
                    edge.publish("DDATA", equipment.id, edge.data(equipment.id))
            # The gateway crashes holding data; what the broker sends it again is alias-only data from before any
            # birth the new gateway has seen: the aliases it kept on disk name the metrics.
            time.sleep(0.5)
            services[0].kill()
            for _ in range(5):
                for equipment in plant.equipment:
                    edge.publish("DDATA", equipment.id, edge.data(equipment.id))
            services[0].start()
            # Bad input beside good data: garbage on a data topic, a metric the plant does not know, a string value.
            edge.client.publish(sparkplug.topic("site", "DDATA", "line", "u01"), b"\x08\x96\x01\xff\xff", qos=1)
            stray = sparkplug.Payload(timestamp=int(time.time() * 1000))
            stray.metrics.add(name="not_in_plant", datatype=sparkplug.DOUBLE, double_value=1.0)
            stray.metrics.add(name="s00", datatype=sparkplug.STRING, string_value="n/a")
            edge.publish("DDATA", "u01", stray)
            edge.publish("DDEATH", "u01", sparkplug.Payload(timestamp=int(time.time() * 1000)))

            expected = dict(edge.sent)
            assert stored_once(stack, expected, 60) == expected, "every metric stored once"
            reasons = Counter(letter.reason for letter in read_dead_letters(kafka, at_least=2))
            assert reasons["malformed_sparkplug"] == 1 and reasons["not_a_number"] == 1, reasons
            log = (log_dir / "gateway.log").read_text()
            assert "MQTT disconnected; reconnecting" in log and log.count("MQTT connected") == 3
            assert "Sparkplug B sequence gap" in log
            assert "Sparkplug B death: the equipment's sensors are stale" in log and '"equipment": ["u01"]' in log
            assert "not_in_plant" in log
        finally:
            edge.close()
            for process in services:
                process.stop()
    finally:
        mosquitto.stop()


@pytest.mark.parametrize(("protocol", "tls"), [("3.1.1", False), ("5", True)], ids=["mqtt3.1.1", "mqtt5-tls"])
def test_mqtt_messages_are_acknowledged_once_stored_so_a_killed_gateway_loses_none(
    stack: DevStack, log_dir: Path, protocol: str, tls: bool
) -> None:
    """Plain JSON topics, QoS 1, a persistent session: the gateway is SIGKILLed after a burst it received but holds
    in memory, and started again; the broker sends it again what it had not acknowledged."""
    document = synthetic_plant(units=2, sensors=3, sources={"mqtt": "plant/{equipment}#{sensor}"})
    plant_file = log_dir / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(document))
    certificate = self_signed_tls(log_dir) if tls else None
    mosquitto = Mosquitto(tls=certificate).start()
    env = stack.service_env() | {
        "LINEWATCH_PLANT_FILE": str(plant_file),
        "LINEWATCH_MQTT__HOST": "127.0.0.1",
        "LINEWATCH_MQTT__PORT": str(mosquitto.port),
        "LINEWATCH_BUFFER__PATH": str(log_dir / "gateway-buffer.sqlite"),
        "LINEWATCH_HOLD_S": "5",  # a crash then surely finds values received but not yet on disk
        "LINEWATCH_MQTT__PROTOCOL": protocol,
    }
    if certificate:
        env |= {"LINEWATCH_MQTT__TLS": "true", "LINEWATCH_MQTT__CA_FILE": str(certificate[0])}
    services = [ServiceProcess(n, env, log_dir / f"{n}.log").start() for n in ("gateway", "validator", "writer")]
    gateway = services[0]
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="plc")
    if certificate:
        publisher.tls_set(ca_certs=str(certificate[0]))
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    sent: Counter[tuple[str, str]] = Counter()
    ms = int(time.time() * 1000) - 10_000

    def burst(messages: int) -> None:
        nonlocal ms
        infos = []
        for n in range(messages):
            ms += 1
            unit = f"u{n % 2:02d}"
            values = {f"s{i:02d}": n + i / 10 for i in range(3)}
            infos.append(publisher.publish(f"plant/{unit}", json.dumps({"ts": ms, **values}), qos=1))
            sent.update((unit, sensor) for sensor in values)
        for info in infos:
            info.wait_for_publish(10)

    try:
        deadline = time.monotonic() + 30
        # Subscribed, not only connected: on a first connection, what is published before the broker has the
        # subscription is not the gateway's (under load that was 20 messages of the first burst).
        while "MQTT subscribed" not in (log_dir / "gateway.log").read_text():
            assert time.monotonic() < deadline, "the gateway did not subscribe at mosquitto"
            time.sleep(0.2)
        burst(200)
        time.sleep(1.5)  # received by the gateway, held in memory
        gateway.kill()
        burst(200)  # queued by the broker for the gateway's session
        gateway.start()
        burst(200)
        expected = dict(sent)
        assert stored_once(stack, expected, 60) == expected, "every value stored once"
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for process in services:
            process.stop()
        mosquitto.stop()
    assert (log_dir / "gateway.log").read_text().count("MQTT connected") == 2


def test_opcua_secured_session_status_codes_and_a_server_that_vanishes(
    stack: DevStack, kafka: KafkaSettings, log_dir: Path
) -> None:
    from asyncua import ua
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from support import read_quiet

    from linewatch.core.contract import telemetry_decoder
    from linewatch.simulation.opcua_server import ServerSecurity

    document = synthetic_plant(units=1, sensors=3, sources={"opcua": "ns=2;s={equipment}.{sensor}"})
    # One sensor by browse path from Objects instead of NodeId: site folder, line folder, unit, variable.
    document["classes"]["press"]["sensors"]["s02"]["source"] = {"opcua": "/2:site/2:line/2:{equipment}/2:s02"}
    plant = PlantModel.model_validate(document)
    plant_file = log_dir / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(document))
    trusted = log_dir / "trusted"
    trusted.mkdir()
    certs = {}
    for who, uri, use in (
        ("server", "urn:linewatch:plant-simulator", ExtendedKeyUsageOID.SERVER_AUTH),
        ("gateway", "urn:linewatch:gateway", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key, cert = log_dir / f"{who}-key.pem", (trusted if who == "gateway" else log_dir) / f"{who}-cert.der"
        asyncio.run(setup_self_signed_certificate(key, cert, uri, "127.0.0.1", [use], {"commonName": who}))
        certs[who] = (cert, key)
    security = ServerSecurity(certs["server"][0], certs["server"][1], trusted, users={"linewatch": "s3cret-plant"})
    port = free_port()

    def server() -> ServerThread:
        thread = ServerThread(plant)
        thread.server = PlantServer(plant, port, security=security)
        return thread

    env = stack.service_env() | {
        "LINEWATCH_PLANT_FILE": str(plant_file),
        "LINEWATCH_OPCUA__ENDPOINT": f"opc.tcp://127.0.0.1:{port}/linewatch/",
        "LINEWATCH_OPCUA__SECURITY_POLICY": "Basic256Sha256",
        "LINEWATCH_OPCUA__CERTIFICATE": str(certs["gateway"][0]),
        "LINEWATCH_OPCUA__PRIVATE_KEY": str(certs["gateway"][1]),
        "LINEWATCH_OPCUA__SERVER_CERTIFICATE": str(certs["server"][0]),
        "LINEWATCH_OPCUA__USERNAME": "linewatch",
        "LINEWATCH_OPCUA__MAX_BACKOFF_S": "1",
        "LINEWATCH_BUFFER__PATH": str(log_dir / "gateway-buffer.sqlite"),
    }

    def wait_for(text: str, log: Path, count: int = 1, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while log.read_text().count(text) < count:
            assert time.monotonic() < deadline, f"not in {log.name}: {text}"
            time.sleep(0.2)

    start = datetime.fromtimestamp(round(time.time()), UTC)
    at = [start + timedelta(seconds=n) for n in range(6)]
    first = server().__enter__()
    try:
        refused = ServiceProcess(
            "gateway", env | {"LINEWATCH_OPCUA__PASSWORD": "wrong-password"}, log_dir / "refused.log"
        )
        refused.start()
        wait_for("OPC UA session lost or refused", log_dir / "refused.log")
        refused.stop()
        assert "OPC UA connected" not in (log_dir / "refused.log").read_text()

        gateway = ServiceProcess(
            "gateway", env | {"LINEWATCH_OPCUA__PASSWORD": "s3cret-plant"}, log_dir / "gateway.log"
        )
        gateway.start()
        wait_for("OPC UA connected", log_dir / "gateway.log")
        write = first.server.write
        first.call(write("u00", "s00", 1.0, at[1]))
        first.call(write("u00", "s01", 2.0, at[1], ua.StatusCodes.UncertainLastUsableValue))
        first.call(write("u00", "s02", 3.0, at[1], ua.StatusCodes.BadSensorFailure))
        time.sleep(1.5)
    finally:
        first.__exit__()
    wait_for("OPC UA session lost or refused", log_dir / "gateway.log")
    second = server().__enter__()  # the server back, after the gateway noticed it gone
    try:
        wait_for("OPC UA connected", log_dir / "gateway.log", count=2)
        second.call(second.server.write("u00", "s00", 4.0, at[3]))
        time.sleep(1.5)
        frames = [telemetry_decoder.decode(v) for v in read_quiet(kafka, kafka.topics.raw)]
        letters = [letter.reason for letter in read_dead_letters(kafka, at_least=1)]
    finally:
        gateway.stop()
        second.__exit__()
    samples = {(s.ts, k): (v, k in s.uncertain) for f in frames for s in f.samples for k, v in s.values.items()}
    assert samples[(at[1], "s00")] == (1.0, False)
    assert samples[(at[1], "s01")] == (2.0, True)  # Uncertain: kept, and marked
    assert (at[1], "s02") not in samples and letters.count("opcua_bad_status") == 1
    assert samples[(at[3], "s00")] == (4.0, False)  # read again after the server came back
