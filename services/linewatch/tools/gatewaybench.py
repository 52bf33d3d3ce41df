"""`linewatch bench gateway`: Sparkplug B over MQTT into Kafka through the gateway (a process of its own, one core),
against the raw MQTT receive rate of the same broker and messages (paho, no decoding), in one run."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from linewatch.core import sparkplug
from linewatch.core.console import out
from linewatch.core.contract import telemetry_decoder
from linewatch.core.kafka import TopicReader, ensure_topics, partitions_of
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import Broker, Mosquitto, wait_until
from linewatch.tools.launcher import ServiceProcess

UNITS = 10


def _messages(count: int, metrics: int) -> list[tuple[str, bytes]]:
    start_ms = int(time.time() * 1000) - count
    messages = []
    for n in range(count):
        device = f"u{n % UNITS:02d}"
        payload = sparkplug.Payload(timestamp=start_ms + n, seq=(n + 1 + UNITS) % 256)
        for i in range(metrics):
            payload.metrics.add(alias=i, timestamp=start_ms + n, datatype=sparkplug.DOUBLE, double_value=n + i / 10)
        messages.append((sparkplug.topic("site", "DDATA", "line", device), payload.SerializeToString()))
    return messages


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-edge")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    for index, (topic, payload) in enumerate(messages):
        infos.append(client.publish(topic, payload, qos=1))
        if index % 5000 == 4999:  # paho refuses more than 65,535 unacknowledged QoS 1 messages
            infos[-1].wait_for_publish(60)
    for info in infos[-100:]:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def _births(port: int, metrics: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-edge")
    client.connect("127.0.0.1", port)
    client.loop_start()
    node = sparkplug.Payload(timestamp=int(time.time() * 1000), seq=0)
    node.metrics.add(name=sparkplug.BDSEQ_METRIC, datatype=sparkplug.INT64, long_value=0)
    client.publish(sparkplug.topic("site", "NBIRTH", "line"), node.SerializeToString(), qos=1).wait_for_publish(10)
    for u in range(UNITS):
        birth = sparkplug.Payload(timestamp=int(time.time() * 1000) - 10**7, seq=u + 1)
        for i in range(metrics):
            birth.metrics.add(name=f"s{i:02d}", alias=i, datatype=sparkplug.DOUBLE, double_value=0.0)
        topic = sparkplug.topic("site", "DBIRTH", "line", f"u{u:02d}")
        client.publish(topic, birth.SerializeToString(), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _mqtt_ceiling(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Messages a second one paho subscriber receives (QoS 1) from a backlog the broker queued for its persistent
    session: the receive rate alone, not the publisher's."""
    received = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        nonlocal received, first, last
        received += 1
        last = time.perf_counter()
        if received == 1:
            first = last
        if received == len(messages):
            done.set()

    def connect() -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-ceiling", clean_session=False)
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        return client

    client = connect()
    client.subscribe("spBv1.0/site/#", qos=1)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    _publish(port, messages)
    client = connect()
    client.loop_start()
    done.wait(300)
    client.loop_stop()
    client.disconnect()
    return (received - 1) / (last - first) if last > first else 0.0


def _last_record_time(kafka: KafkaSettings) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    partitions = [TopicPartition(kafka.topics.raw, p) for p in partitions_of(consumer, kafka.topics.raw, kafka)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    last = 0
    while batch := consumer.poll(timeout_ms=1000):
        last = max([last, *(r.timestamp for records in batch.values() for r in records)])
    consumer.close()
    return last / 1000


def bench_gateway(messages: int, metrics: int) -> int:
    batch = _messages(messages, metrics)
    root = Path(tempfile.mkdtemp(prefix="linewatch-bench-gateway-"))
    plant = {
        "site": "site",
        "sources": {"sparkplug": "{site}/{line}/{equipment}/{sensor}"},
        "classes": {"press": {"sensors": {f"s{i:02d}": {"unit": "bar", "normal": [0, 1e9]} for i in range(metrics)}}},
        "areas": [
            {
                "name": "area",
                "lines": [
                    {"name": "line", "equipment": [{"class": "press", "ids": [f"u{u:02d}" for u in range(UNITS)]}]}
                ],
            }
        ],
    }
    (root / "plant.yaml").write_text(yaml.safe_dump(plant))
    broker, mosquitto = Broker().start(), Mosquitto().start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(kafka, kafka.topics.all())
    gateway = ServiceProcess(
        "gateway",
        {
            "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "LINEWATCH_PLANT_FILE": str(root / "plant.yaml"),
            "LINEWATCH_MQTT__HOST": "127.0.0.1",
            "LINEWATCH_MQTT__PORT": str(mosquitto.port),
            "LINEWATCH_BUFFER__PATH": str(root / "buffer.sqlite"),
            "LINEWATCH_HEALTH__CHECK_INTERVAL_S": "30",
        },
        root / "gateway.log",
    )
    log = root / "gateway.log"
    try:
        ceiling = _mqtt_ceiling(mosquitto.port, batch) * metrics
        # The gateway's persistent session: subscribed once, away while the broker queues the backlog, then back.
        gateway.start()
        wait_until("gateway subscribed", lambda: "MQTT subscribed" in log.read_text(), 60)
        gateway.stop()
        _births(mosquitto.port, metrics)
        _publish(mosquitto.port, batch)
        reader = TopicReader(kafka, kafka.topics.raw)
        values = 0
        want = messages * metrics + UNITS * metrics

        def count(value: bytes) -> None:
            nonlocal values
            values += sum(len(s.values) for s in telemetry_decoder.decode(value).samples)

        gateway.start()
        wait_until("gateway back", lambda: log.read_text().count("MQTT connected") == 2, 60, poll_s=0.005)
        started = time.time()  # from its reconnection: the backlog starts flowing
        deadline = time.monotonic() + 300
        while values < want and time.monotonic() < deadline:
            reader.read(count, 0.2)
        # To the last frame's time in Kafka (its record timestamp), not to when this reader saw it.
        elapsed = _last_record_time(kafka) - started
        reader.close()
    finally:
        gateway.stop()
        mosquitto.stop()
        broker.stop()
    rate = (values - UNITS * metrics) / elapsed
    out(f"{messages} DDATA messages of {metrics} metrics, {UNITS} devices; gateway log: {root / 'gateway.log'}")
    out(f"values in Kafka: {values} of {want} in {elapsed:.1f} s after the gateway reconnected (backlog of {messages})")
    out(f"gateway_values_per_s={rate:.0f} mqtt_ceiling_values_per_s={ceiling:.0f} ratio={rate / ceiling:.2f}")
    return 0 if values >= want else 1
