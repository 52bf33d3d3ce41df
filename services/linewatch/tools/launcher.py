"""Start linewatch services as child processes of their own (`python -m linewatch.services.NAME`) and stop them
by PID: what `linewatch up`, drills, what-if runs, benchmarks and the tests run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from linewatch.core.health import EXIT_BROKER_STATE_LOST
from linewatch.core.services import service


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_path: Path | None = None
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    health_port: int | None = None  # its GET /livez and /readyz, when set

    def start(self) -> ServiceProcess:
        sink: IO[bytes] | int = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        health = {"LINEWATCH_HEALTH__PORT": str(self.health_port)} if self.health_port else {}
        if self.log_path:  # a run's own place for what a service keeps across its restarts
            health["LINEWATCH_HEALTH__STATE_DIR"] = str(self.log_path.parent / "state")
        self.process = subprocess.Popen(
            [sys.executable, "-m", service(self.name).module, *self.args],
            env=os.environ | self.env | health,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
        if not isinstance(sink, int):
            sink.close()
        return self

    def run(self, timeout_s: float) -> None:
        """Start it and wait for it to finish (the simulator loading a topic); raise if it failed."""
        self.start()
        assert self.process is not None
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"{self.name} did not finish within {timeout_s:.0f} s, see {self.log_path}") from None
        if status != 0:
            raise RuntimeError(f"{self.name} exited with {status}, see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def readiness(self, timeout_s: float = 0.5) -> tuple[bool, str]:
        """Its GET /readyz: (ready, why)."""
        if not self.alive():
            return False, "not running"
        if self.health_port is None:
            return True, "running (no health port)"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as refusal:
            body = refusal.read()
        except OSError as exc:
            return False, f"no answer on its health port ({exc})"
        verdict = json.loads(body)
        return bool(verdict["ok"]), str(verdict["reason"])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


def stop_all(processes: list[ServiceProcess], timeout_s: float = 20.0) -> None:
    """Stop them together: each one's graceful shutdown (a faust worker's takes seconds) overlaps the others'."""
    for process in processes:
        if process.alive():
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        process.stop(timeout_s)


@dataclass
class Restart:
    name: str
    exit_code: int | None
    at: datetime

    def describe(self) -> str:
        why = "the broker lost its state" if self.exit_code == EXIT_BROKER_STATE_LOST else f"exit {self.exit_code}"
        return f"{self.at:%Y-%m-%d %H:%M:%S} UTC  {self.name} restarted ({why})"


class Supervisor:
    """Starts a service again when it fails, as compose and k8s do, after a backoff that doubles to
    `max_backoff_s` while it keeps failing. When one exits for the broker's loss, the others soon follow: it waits
    for them (`quiesce_s` at most, then stops the rest), calls `reset` (the embedded broker is started afresh, so
    no old client's late send leaves orphan partitions behind) and starts them all again."""

    def __init__(
        self,
        processes: list[ServiceProcess],
        reset: Callable[[], None] = lambda: None,
        max_backoff_s: float = 30.0,
        quiesce_s: float = 15.0,
    ) -> None:
        self.processes = processes
        self.reset = reset
        self.max_backoff_s = max_backoff_s
        self.quiesce_s = quiesce_s
        self.restarts: list[Restart] = []
        self._backoff = {p.name: 0.0 for p in processes}
        self._due: dict[str, float] = {}
        self._loss_seen: float | None = None

    def check(self) -> list[Restart]:
        """Restart what has failed and is due; returns the restarts made now."""
        now = time.monotonic()
        exited = [p for p in self.processes if p.process is not None and not p.alive() and p.process.returncode != 0]
        if self._loss_seen is None and any(p.process.returncode == EXIT_BROKER_STATE_LOST for p in exited if p.process):
            self._loss_seen = now
        if self._loss_seen is not None:
            return self._after_loss(now)
        made = []
        for process in exited:
            assert process.process is not None
            if process.name not in self._due:
                backoff = self._backoff[process.name]
                self._due[process.name] = now + backoff
                self._backoff[process.name] = min(self.max_backoff_s, max(1.0, 2 * backoff))
            if now >= self._due[process.name]:
                del self._due[process.name]
                made.append(Restart(process.name, process.process.returncode, datetime.now(UTC)))
                process.start()
        self.restarts += made
        return made

    def _after_loss(self, now: float) -> list[Restart]:
        assert self._loss_seen is not None
        running = [p for p in self.processes if p.alive()]
        if running and now - self._loss_seen < self.quiesce_s:
            return []
        for process in running:
            process.stop()
        self.reset()
        made = []
        for process in self.processes:
            if process not in running and process.process is not None and process.process.returncode == 0:
                continue  # it had finished its work (a simulator run) before the loss
            made.append(Restart(process.name, EXIT_BROKER_STATE_LOST, datetime.now(UTC)))  # the cause, for all
            process.start()
        self._loss_seen = None
        self._due.clear()
        self.restarts += made
        return made

    def failing(self, limit: int = 5) -> list[str]:
        """Services restarted more than `limit` times for their own failures (the broker's losses not counted)."""
        counts = Counter(r.name for r in self.restarts if r.exit_code != EXIT_BROKER_STATE_LOST)
        return sorted(name for name, count in counts.items() if count > limit)
