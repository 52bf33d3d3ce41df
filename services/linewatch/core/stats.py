"""Per-service counters published every second on the stats topic (live view, benchmarks)."""

from __future__ import annotations

import os
import resource
import socket
from collections import Counter
from datetime import UTC, datetime

from linewatch.core.contract import ServiceStats, encoder


class StatsCounter:
    def __init__(self, service: str) -> None:
        self.service = service
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self.counters: Counter[str] = Counter()

    def took(self, topic: str, count: int = 1) -> None:
        """Records taken in from a topic; every service counts them the same way (live view, drills, dashboards)."""
        self.counters["records_in"] += count
        self.counters[f"records_in.{topic}"] += count

    def snapshot(self) -> bytes:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        return encoder.encode(
            ServiceStats(
                service=self.service,
                instance=self.instance,
                at=datetime.now(UTC),
                counters=dict(self.counters),
                peak_rss_bytes=peak_rss,
            )
        )
