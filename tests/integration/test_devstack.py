"""The dev stack's servers, started by the project on free ports: a port taken between choosing it and the
server's bind (another server of the run starting) costs a retry on other ports, not the run, and is never taken
for the server itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaAdminClient
from paho.mqtt.enums import CallbackAPIVersion

from linewatch.tools.devstack import Broker, Influxd, Mosquitto, PortTaken

pytestmark = pytest.mark.reliability


@contextmanager
def listening(port: int = 0) -> Iterator[int]:
    """Another process's listener, as a server of the run that took the port first."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a killed server's port may linger
        taken.bind(("127.0.0.1", port))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_port_taken_before_influxd_binds_it_is_traded_for_another(tmp_path_factory: pytest.TempPathFactory) -> None:
    with listening() as port:
        influxd = Influxd(root=tmp_path_factory.mktemp("influxd"), http_port=port)
        try:
            influxd.start()
            assert influxd.http_port != port
            assert influxd.query("SHOW DATABASES")["results"]
        finally:
            influxd.stop()


def test_a_restart_keeps_its_ports_and_says_why_it_failed(tmp_path_factory: pytest.TempPathFactory) -> None:
    influxd = Influxd(root=tmp_path_factory.mktemp("influxd")).start()
    port = influxd.http_port
    influxd.stop(kill=True)
    with listening(port):
        try:
            with pytest.raises(PortTaken, match="address already in use"):
                influxd.start()
            assert influxd.http_port == port
        finally:
            influxd.stop()


def test_a_broker_whose_port_is_taken_is_not_mistaken_for_the_listener_there() -> None:
    # Tansu exits within milliseconds on a taken port, but a TCP connect made first reached the other listener,
    # and the start reported a broker that was not there.
    with listening() as port:
        broker = Broker(port=port)
        try:
            broker.start()
            assert broker.port != port
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
            try:
                assert admin.describe_cluster()["brokers"][0]["port"] == broker.port
            finally:
                admin.close()
        finally:
            broker.stop()


def test_a_broker_restart_onto_a_taken_port_fails_and_says_so() -> None:
    broker = Broker().start()
    port = broker.port
    broker.stop()
    with listening(port):
        try:
            with pytest.raises(PortTaken, match=f"port {port} is taken"):
                broker.restart()
            assert broker.port == port
        finally:
            broker.stop()


def test_mosquitto_whose_port_is_taken_starts_on_another() -> None:
    with listening() as port:
        mosquitto = Mosquitto(port=port)
        try:
            mosquitto.start()
            assert mosquitto.port != port
            client = mqtt.Client(CallbackAPIVersion.VERSION2)
            client.connect("127.0.0.1", mosquitto.port)
            for _ in range(20):
                client.loop(timeout=0.1)  # until mosquitto's CONNACK
            assert client.is_connected()
            client.disconnect()
        finally:
            mosquitto.stop()
