"""Times on the command line: ISO 8601, and a time without an offset is UTC (never the machine's zone)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
