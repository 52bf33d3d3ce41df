"""MQTT source (paho-mqtt, its network loop in a thread of its own): Sparkplug B under spBv1.0/, and plain JSON
topics mapped by the plant file (TOPIC#FIELD). QoS 1; paho reconnects with backoff and resubscribes."""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from linewatch.core import sparkplug
from linewatch.core.stats import StatsCounter
from linewatch.core.timeutil import parse_time
from linewatch.services.gateway.frames import Assembler, Point
from linewatch.services.gateway.settings import MqttSettings
from linewatch.services.gateway.sparkplug import SparkplugHost

log = logging.getLogger(__name__)
SPARKPLUG_PREFIX = sparkplug.NAMESPACE + "/"


class JsonTopics:
    """Plain JSON payloads: a topic's object fields (dots for nesting) are sensors, per the plant file's mapping."""

    def __init__(self, points: dict[str, Point], assembler: Assembler, stats: StatsCounter, timestamp_field: str):
        self.fields: dict[str, list[tuple[list[str], Point]]] = defaultdict(list)
        for address, point in points.items():
            topic, _, path = address.partition("#")
            if not path:
                raise ValueError(f"MQTT address {address!r}: use TOPIC#FIELD")
            self.fields[topic].append((path.split("."), point))
        self.assembler = assembler
        self.stats = stats
        self.timestamp_field = timestamp_field

    def handle(self, topic: str, payload: bytes) -> None:
        mapped = self.fields.get(topic)
        if not mapped:
            return
        try:
            document = json.loads(payload)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            ts = _time(document.get(self.timestamp_field))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.assembler.reject(f"mqtt:{topic}", "invalid_json", str(exc), payload)
            return
        samples: dict[str, dict[str, float]] = defaultdict(dict)
        for path, point in mapped:
            value: Any = document
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.assembler.reject(
                    f"mqtt:{topic}", "not_a_number", f"{'.'.join(path)}: {value!r} is not a number", payload
                )
                continue
            samples[point.equipment.id][point.sensor] = float(value)
        for equipment_id, values in samples.items():
            self.assembler.add(equipment_id, ts, values)
            self.stats.counters["values_in"] += len(values)


def _time(value: Any) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)  # > 1e11: milliseconds
    if isinstance(value, str):
        return parse_time(value)
    raise ValueError(f"timestamp {value!r} is neither ISO 8601 nor epoch seconds or milliseconds")


class MqttSource:
    def __init__(
        self,
        settings: MqttSettings,
        sparkplug_host: SparkplugHost | None,
        json_topics: JsonTopics | None,
        stats: StatsCounter,
    ) -> None:
        assert settings.host is not None
        self.settings = settings
        self.sparkplug = sparkplug_host
        self.json = json_topics
        self.stats = stats
        self.v5 = settings.protocol == "5"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else not settings.persistent_session,
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self.client.username_pw_set(settings.username, password)
        if settings.tls:
            self.client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.certificate) if settings.certificate else None,
                keyfile=str(settings.private_key) if settings.private_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected_at: float | None = None

    def subscriptions(self) -> list[str]:
        topics = (
            [f"{sparkplug.NAMESPACE}/{group}/#" for group in sorted(self.sparkplug.groups())] if self.sparkplug else []
        )
        return topics + (sorted(self.json.fields) if self.json else [])

    def start(self) -> None:
        session: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.session_expiry_s if self.settings.persistent_session else 0
            session = {"clean_start": not self.settings.persistent_session, "properties": properties}
        self.client.connect_async(
            self.settings.host or "", self.settings.port, keepalive=self.settings.keepalive_s, **session
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection", extra={"reason": str(reason)})
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions()])
        self.connected_at = time.monotonic()
        log.info(
            "MQTT connected",
            extra={"broker": f"{self.settings.host}:{self.settings.port}", "subscriptions": self.subscriptions()},
        )

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected_at = None
        self.stats.counters["mqtt_disconnects"] += 1
        log.warning("MQTT disconnected; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        topic = message.topic  # paho decodes it at every read
        try:
            if self.sparkplug is not None and topic.startswith(SPARKPLUG_PREFIX):
                for command, payload in self.sparkplug.handle(topic, message.payload):
                    client.publish(command, payload, qos=0)
            elif self.json is not None:
                self.json.handle(topic, message.payload)
        except Exception:  # one message must never stop the network thread: say which, go on
            self.stats.counters["errors"] += 1
            log.exception("MQTT message not handled", extra={"topic": topic})
