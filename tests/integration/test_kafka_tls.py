"""Kafka over TLS: every client linewatch has (faust in the validator, aiokafka in the writer, kafka-python in
the simulator, the admin and the observers) reaches the broker only through a TLS listener, verifying it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError
from support import per_sensor_mismatches, self_signed_tls, wait_for_counts

from linewatch.core.kafka import ensure_topics
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import Broker, DevStack, free_port, wait_until
from linewatch.tools.launcher import ServiceProcess

pytestmark = pytest.mark.production


class TlsListener(threading.Thread):
    """A TLS listener in front of the broker's plaintext port, as a TLS-terminating load balancer is."""

    def __init__(self, port: int, target_port: int, cert: Path, key: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.target_port, self.cert, self.key = port, target_port, cert, key
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    def run(self) -> None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

        async def serve() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=context)
            self.ready.set()
            async with server:
                await server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self.loop.run_until_complete(serve())

    def stop(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = self_signed_tls(tmp_path)
    listener_port = free_port()
    broker = Broker(advertised_port=listener_port).start()
    listener = TlsListener(listener_port, broker.port, cert, key)
    listener.start()
    assert listener.ready.wait(10)
    try:
        yield listener_port, cert
    finally:
        listener.stop()
        broker.stop()


def test_every_client_works_over_tls_and_plaintext_is_refused(
    stack: DevStack, tls_broker: tuple[int, Path], log_dir: Path, tmp_path: Path
) -> None:
    port, ca = tls_broker
    bootstrap = f"127.0.0.1:{port}"
    with pytest.raises(KafkaError):  # a plaintext client cannot even fetch metadata
        ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), ["plain"], timeout_s=3.0)
    secure = KafkaSettings(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=ca)
    ensure_topics(secure, secure.topics.all())

    env = stack.service_env() | {
        "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LINEWATCH_KAFKA__SECURITY_PROTOCOL": "SSL",
        "LINEWATCH_KAFKA__SSL_CAFILE": str(ca),
    }
    services = [ServiceProcess(name, env, log_dir / f"{name}.log").start() for name in ("validator", "writer")]
    try:
        manifest_path = tmp_path / "manifest.json"
        simulator_args = ("--samples", "4400", "--max-speed", "--frame-samples", "10", "--manifest", str(manifest_path))
        ServiceProcess("simulator", env, log_dir / "simulator.log", simulator_args).run(timeout_s=120)
        expected = json.loads(manifest_path.read_text())["expected_values"]
        stored = wait_for_counts(stack.influxd, expected, timeout_s=90, alive=lambda: all(s.alive() for s in services))
        assert per_sensor_mismatches(expected, stored) == []
    finally:
        for service in services:
            service.stop()


def test_the_operator_api_speaks_https_and_the_cli_checks_its_certificate(
    stack: DevStack, log_dir: Path, tmp_path: Path
) -> None:
    cert, key = self_signed_tls(tmp_path)
    port, token = free_port(), "olga-5c2e9a7d31"
    env = stack.service_env() | {
        "LINEWATCH_API_PORT": str(port),
        "LINEWATCH_API_CERTFILE": str(cert),
        "LINEWATCH_API_KEYFILE": str(key),
        "LINEWATCH_API_TOKENS": json.dumps({"olga": {"token": token, "role": "operator"}}),
        "LINEWATCH_NOTIFY__ENABLED": "false",
    }
    alerter = ServiceProcess("alerter", env, log_dir / "alerter.log").start()
    trusting = ssl.create_default_context(cafile=cert)
    try:
        console = f"https://127.0.0.1:{port}/console"
        wait_until("the console is served over HTTPS", lambda: _serves(console, trusting), 90, 0.5)
        cli = env | {"LINEWATCH_OPERATOR_TOKEN": token, "LINEWATCH_API_URL": f"https://127.0.0.1:{port}"}
        listed = _linewatch(cli | {"LINEWATCH_API_CAFILE": str(cert)}, "alarms", "list")
        assert listed.returncode == 0 and listed.stdout.startswith("priority"), listed.stderr
        # A certificate the CLI has no reason to trust is refused, in one line that says what to set.
        untrusted = _linewatch(cli, "alarms", "list")
        assert untrusted.returncode == 2 and len(untrusted.stderr.splitlines()) == 1, untrusted.stderr
        assert "certificate is not trusted" in untrusted.stderr
        assert untrusted.stderr.strip().endswith("set LINEWATCH_API_CAFILE to the CA that signed it")
        # Plain HTTP on the same port gets no answer: the token is never sent in the clear.
        plain = _linewatch(cli | {"LINEWATCH_API_URL": f"http://127.0.0.1:{port}"}, "alarms", "list")
        assert plain.returncode == 2 and "cannot reach a server" in plain.stderr, plain.stderr
        assert alerter.alive()
    finally:
        alerter.stop()
    # A certificate without its key is refused at start, in one line.
    lone = _linewatch({k: v for k, v in env.items() if k != "LINEWATCH_API_KEYFILE"}, "service", "alerter")
    assert lone.returncode == 2 and "LINEWATCH_API_CERTFILE and LINEWATCH_API_KEYFILE" in lone.stderr, lone.stderr


def _serves(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _linewatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "linewatch.tools.cli", *args]
    return subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=60, check=False)
