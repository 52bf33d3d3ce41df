"""The collector's pauses. A full collection walks every object the process keeps; the scorer keeps its models'
(about 100,000 objects), and each walk of them stopped it for 65-195 ms while frames waited (`bench latency`,
2026-12-06: the slow bursts were the scorer's, at its full collections, with CPU to spare). What lives as long as
the process is frozen out of those walks."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def freeze_startup_heap() -> None:
    """Once started (models loaded, libraries imported): collect what startup left behind, then freeze the rest.
    Frozen objects are still freed when nothing refers to them; only a cycle among them would stay."""
    gc.collect()
    gc.freeze()


def freeze_long_lived() -> None:
    """After loading something that lives until it is replaced (a model version): out of the collector's walks,
    without a full collection's pause on the way."""
    gc.freeze()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """While a measuring instrument times something: no pause of its own in the figures (the latency benchmark's
    full collections, 53-107 ms, held its load generator and its relay of InfluxDB's answers). What it built
    before is collected and frozen; collection resumes on leaving."""
    freeze_startup_heap()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
