"""Start linewatch services as child processes of their own (`python -m linewatch.services.NAME`) and stop them
by PID: what `linewatch up`, drills, what-if runs, benchmarks and the tests run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from linewatch.core.services import service


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_path: Path | None = None
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        sink: IO[bytes] | int = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", service(self.name).module, *self.args],
            env=os.environ | self.env,
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
