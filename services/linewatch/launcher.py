"""Start linewatch services as child processes (`python -m <service>`) and stop them by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SERVICES = ("validator", "scorer", "alerter", "writer")


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
            [sys.executable, "-m", self.name, *self.args],
            env=os.environ | self.env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
        if not isinstance(sink, int):
            sink.close()
        return self

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
