"""A stop that cannot finish ends anyway. With the broker gone, a faust worker's stop waits for the group
coordinator to take its last commit, and aiokafka looks for one forever: the validator, the scorer and the alerter
were still running 60 s after SIGTERM (2026-12-06), until the container engine killed them. Past the deadline the
process exits on its own, saying so. Nothing is lost: offsets are committed only once their effects are durable,
so what was not committed is read again after the restart."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

# Not 0: the stop did not finish; not 137 either, which reads as killed by the engine.
STOP_OVERRUN_EXIT = 3


def exit_unless_stopped_within(seconds: float) -> threading.Timer:
    """Arm at the start of a stop; the process exits with STOP_OVERRUN_EXIT if it is still running `seconds`
    later. A daemon timer: a stop that finishes in time never waits for it."""

    def give_up() -> None:
        log.error(
            "stop did not finish in time, exiting: what was not committed is read again after the restart",
            extra={"stop_within_s": seconds},
        )
        logging.shutdown()  # the line above out before the exit, which skips every other cleanup
        os._exit(STOP_OVERRUN_EXIT)

    timer = threading.Timer(seconds, give_up)
    timer.name, timer.daemon = "stop-deadline", True
    timer.start()
    return timer


def begin_stop(stop: asyncio.Event, seconds: float) -> None:
    """An asyncio service's stop, once: set `stop`, and end the process if the stop takes over `seconds` (its loop
    may be waiting on a broker that is gone)."""
    if not stop.is_set():
        exit_unless_stopped_within(seconds)
        stop.set()


def stop_on_signals(stop: asyncio.Event, seconds: float) -> None:
    """SIGTERM and SIGINT begin the stop (`begin_stop`). Call from within the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, begin_stop, stop, seconds)
