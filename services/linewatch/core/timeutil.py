"""Times as people and historians write them. A time without an offset is UTC, never the machine's zone."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

# Said in every --help that takes a time.
TIME_FORMATS = (
    "ISO 8601 (2026-11-01T06:00:00Z, 2026-11-01 06:00), 01.11.2026 06:00:00, 01/11/2026 06:00:00 AM, or epoch "
    "seconds; UTC unless given"
)
_DAY_FIRST = (
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S.%f",
    "%d/%m/%Y %I:%M:%S %p",  # a 12-hour clock, as SCADA exports write it
    "%d/%m/%Y %I:%M:%S.%f %p",
    "%d/%m/%Y %I:%M %p",
)
_spellings = list(_DAY_FIRST)  # the spelling that matched last comes first


def parse_time(text: str) -> datetime:
    """ISO 8601 (`Z` or `z` too), a few day-first spellings, or epoch seconds (milliseconds when that large);
    ValueError naming the accepted forms otherwise."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return datetime.fromtimestamp(number / 1000 if abs(number) > 1e11 else number, UTC)
    candidates = [text, text[:-1] + "+00:00"] if text[-1:] in "zZ" else [text]
    for candidate in candidates:
        try:
            parsed = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        for spelling in list(_spellings):
            try:
                parsed = datetime.strptime(text, spelling)  # noqa: DTZ007 (UTC is set below)
            except ValueError:
                continue
            # A file's next row is written alike: tried first (8 against 58 µs for the last spelling).
            _spellings.remove(spelling)
            _spellings.insert(0, spelling)
            break
        else:
            raise ValueError(f"{text!r} is not a time: use {TIME_FORMATS}")
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def utc_time(text: str) -> datetime:
    """An argparse type: a wrong time is a one-line usage error, not a traceback."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
