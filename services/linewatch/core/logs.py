"""Structured JSON logs: one object per line, with the service name on every record."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RepeatLimit(logging.Filter):
    """At most `burst` lines per `window_s` of one kind (logger, level, message and fields with their numbers
    blanked); the next line let through says how many were held back. A broker that is away makes clients repeat
    the same complaint many times a second; the first lines say it all."""

    def __init__(self, burst: int = 3, window_s: float = 10.0, library_lines_per_s: float = 2.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[tuple[str, int, str], tuple[float, int, int]] = {}  # kind -> window start, let, held
        # Libraries (aiokafka, kafka, faust) also share a budget: a lost broker makes each of them complain in
        # its own words at once. A bucket of 5 lines refilled at `library_lines_per_s`; ours never wait for it.
        self._rate, self._tokens, self._filled_at, self._library_held = library_lines_per_s, 5.0, time.monotonic(), 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("linewatch"):
            now = time.monotonic()
            self._tokens = min(5.0, self._tokens + (now - self._filled_at) * self._rate)
            self._filled_at = now
            if self._tokens < 1.0:
                self._library_held += 1
                return False
            self._tokens -= 1.0
            if self._library_held:
                record.library_lines_held_back, self._library_held = self._library_held, 0
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        kind = (record.name, record.levelno, re.sub(r"\d+", "#", f"{record.getMessage()} {extra}")[:240])
        now = time.monotonic()
        start, let, held = self._seen.get(kind, (now, 0, 0))
        if now - start >= self.window_s:
            start, let = now, 0
        if let >= self.burst:
            self._seen[kind] = (start, let, held + 1)
            return False
        if held:
            record.repeats_held_back = held
        self._seen[kind] = (start, let + 1, 0)
        if len(self._seen) > 10_000:  # messages with ever-new text: forget old kinds rather than grow
            self._seen.clear()
        return True


# kafka-python 3 warns whenever one step of its network thread's loop took over 0.1 s ("a tight sync loop ... Other
# pollers will time out"), where asyncio does so only in debug mode. On shared cores a thread that waited for its
# turn trips it: said to an engineer running a command, it points at a bug that is not there. A step of a second
# or more is still said.
_SLOW_STEP = re.compile(r"Task .* ran for ([0-9.]+)s \(>")


def not_a_short_slow_step(record: logging.LogRecord) -> bool:
    slow = _SLOW_STEP.match(record.getMessage())
    return slow is None or float(slow.group(1)) >= 1.0


def configure(service: str, level: str = "INFO") -> None:
    """Send every logger, faust's and aiokafka's included, through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Their INFO output is a line per rebalance step; warnings still come through.
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kafka.net.selector").addFilter(not_a_short_slow_step)


def configure_command(service: str, level: str = "INFO") -> None:
    """A command's output is what it prints; its logs stay at WARNING unless another level than the default
    INFO was asked for."""
    configure(service, "WARNING" if level == "INFO" else level)
