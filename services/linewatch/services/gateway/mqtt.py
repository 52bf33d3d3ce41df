"""MQTT source (paho-mqtt on the gateway's event loop): Sparkplug B under spBv1.0/, and plain JSON topics mapped
by the plant file (TOPIC#FIELD). QoS 1; reconnects with backoff and resubscribes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections import defaultdict, deque
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
            manual_ack=settings.ack_when_stored,
        )
        self._unacked: deque[tuple[float, int]] = deque()  # (arrival, message id) of QoS 1 messages
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
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connected_at: float | None = None
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE message id -> its topics, until the SUBACK

    def subscriptions(self) -> list[str]:
        topics = (
            [f"{sparkplug.NAMESPACE}/{group}/#" for group in sorted(self.sparkplug.groups())] if self.sparkplug else []
        )
        return topics + (sorted(self.json.fields) if self.json else [])

    async def run(self, stop: asyncio.Event) -> None:
        """paho's network on this event loop through its external-loop callbacks rather than in a thread of its
        own: one thread takes every message, so the hot path never waits for the interpreter lock held by the
        thread that sends to Kafka (measured with `linewatch bench gateway`: ratio 0.37-0.46 with the thread)."""
        client, settings = self.client, self.settings
        _OnLoop(client, asyncio.get_running_loop())
        session: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s if settings.persistent_session else 0
            session = {"clean_start": not settings.persistent_session, "properties": properties}
        client.connect_async(settings.host or "", settings.port, keepalive=settings.keepalive_s, **session)
        backoff = 1.0
        while not stop.is_set():
            if client.socket() is None:  # never connected, lost, or refused (bad credentials close it too)
                try:
                    # Off the loop: a broker that does not answer holds the TCP connect up to its timeout.
                    await asyncio.to_thread(client.reconnect)
                except OSError as exc:
                    log.warning(
                        "MQTT broker unreachable; retrying",
                        extra={"broker": f"{settings.host}:{settings.port}", "error": str(exc), "retry_in_s": backoff},
                    )
                wait_s, backoff = backoff, min(30.0, 2 * backoff)
            else:
                client.loop_misc()  # keep-alive pings; notices a broker that stopped answering
                wait_s = 1.0
                if client.is_connected():
                    backoff = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        client.disconnect()
        client.loop_write()  # the DISCONNECT, before the loop ends

    def stored(self, arrived_by: float) -> None:
        """Everything that arrived by `arrived_by` (time.monotonic()) is in the buffer: the broker may forget it."""
        unacked = self._unacked
        while unacked and unacked[0][0] <= arrived_by:
            self.client.ack(unacked.popleft()[1], 1)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection", extra={"reason": str(reason)})
            return
        topics = self.subscriptions()
        _, mid = client.subscribe([(topic, 1) for topic in topics])
        if mid is not None:  # None: the connection is already gone, the next one subscribes again
            self._subscribing[mid] = topics
        self.connected_at = time.monotonic()
        log.info(
            "MQTT connected", extra={"broker": f"{self.settings.host}:{self.settings.port}", "subscriptions": topics}
        )

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        """The broker's answer: messages on a topic arrive only from here on, and only where it granted QoS 1."""
        topics = self._subscribing.pop(mid, [])
        refused = {topic: str(reason) for topic, reason in zip(topics, reasons, strict=False) if reason.is_failure}
        qos0 = [topic for topic, reason in zip(topics, reasons, strict=False) if reason.value == 0]
        if refused:
            log.error(
                "MQTT broker refused subscriptions: nothing arrives from these topics; allow them in the broker's "
                "ACL for this client",
                extra={"refused": refused, "client_id": self.settings.client_id},
            )
        if qos0:  # the broker neither keeps nor resends QoS 0 messages: a gateway restart loses what came meanwhile
            log.warning(
                "MQTT broker granted QoS 0 only: messages sent while the gateway is away are lost",
                extra={"topics": qos0},
            )
        log.info("MQTT subscribed", extra={"topics": [t for t in topics if t not in refused]})

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected_at = None
        self._unacked.clear()  # the broker sends them again on the next connection
        self._subscribing.clear()
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
        except Exception:  # one message must never stop the gateway: say which, go on
            self.stats.counters["errors"] += 1
            log.exception("MQTT message not handled", extra={"topic": topic})
        if message.qos == 1 and self.settings.ack_when_stored:
            self._unacked.append((time.monotonic(), message.mid))


class _OnLoop:
    """paho's socket callbacks onto an asyncio loop. Reads take every packet already received in one wake-up;
    writes (PUBACKs) go out right after the message that caused them, and wait for the socket only when it is full.
    Sockets are watched by descriptor number: paho reports a closed socket whose fileno() is gone."""

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.loop = client, loop
        self.thread = threading.get_ident()
        self.reading: int | None = None
        self.writing: int | None = None
        self.peek = False
        client.on_socket_open = lambda c, u, sock: self._on_loop(self._open, sock)
        client.on_socket_close = lambda c, u, sock: self._on_loop(self._close)
        # Soon, not now: paho asks while it handles a packet, and writing then would re-enter it.
        client.on_socket_register_write = lambda c, u, sock: self._on_loop(self.loop.call_soon, self._write)
        client.on_socket_unregister_write = lambda c, u, sock: self._on_loop(self._stop_waiting)

    def _on_loop(self, call: Any, *args: Any) -> None:
        if threading.get_ident() == self.thread:
            call(*args)
        else:  # connecting happens in a worker thread
            self.loop.call_soon_threadsafe(call, *args)

    def _open(self, sock: Any) -> None:
        self._close()
        self.reading = sock.fileno()
        self.peek = isinstance(sock, socket.socket) and not hasattr(sock, "pending")  # TLS cannot peek
        self.loop.add_reader(self.reading, self._read, sock)

    def _close(self) -> None:
        self._stop_waiting()
        if self.reading is not None:
            self.loop.remove_reader(self.reading)
            self.reading = None

    def _read(self, sock: Any) -> None:
        for _ in range(256):
            if self.client.loop_read() != paho.MQTT_ERR_SUCCESS or self.reading is None:
                return
            try:
                if not (sock.recv(1, socket.MSG_PEEK) if self.peek else sock.pending()):
                    return
            except (BlockingIOError, OSError, AttributeError):
                return

    def _write(self) -> None:
        self.client.loop_write()
        if self.client.want_write() and self.writing is None and self.reading is not None:
            self.writing = self.reading  # the socket is full: go on when it can take more
            self.loop.add_writer(self.writing, self._write)
        elif not self.client.want_write():
            self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self.writing is not None:
            self.loop.remove_writer(self.writing)
            self.writing = None
