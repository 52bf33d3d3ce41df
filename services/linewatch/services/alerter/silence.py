"""Which units this worker heard live, and when each one's silence is due: the clock side of the no-data alarm
(`conditions/no_data.py`). Time passing is measured on this worker's wall clock from each unit's last frame's
arrival, so clock skew between units, a backlog being caught up and replays of old data raise nothing; only data
that arrived live (its last sample within `LIVE_WITHIN_S` of the wall clock) is watched. A partition this worker
takes (a start, a restart, a rebalance) brings its units' state: those that were running and heard live, and have
been silent since, are watched from their last sample on, so a unit that stopped while no worker was looking is
still alarmed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LIVE_WITHIN_S = 300.0  # a device clock this far off, or data this late, is not watched for silence
CHECK_EVERY_S = 1.0
RECHECK_RAISED_S = 10.0  # a unit silent with its alarm up: time passing for escalation and shelving


@dataclass(frozen=True)
class Place:
    """Where a unit's records are, for a unit this worker has no record of yet: what its state is written as."""

    topic: str
    partition: int

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class Placed:
    """A stand-in for a faust event of the unit's partition (a table write needs one)."""

    message: Place


@dataclass
class Watch:
    event: Any  # the unit's last record here: its partition (this worker's?) and where its state is written
    last_ts: float  # the unit's last sample time, its own clock
    arrived: float  # monotonic
    next_check: float  # monotonic: when its wait is over, then each RECHECK_RAISED_S


class Silences:
    def __init__(self) -> None:
        self.watched: dict[bytes, Watch] = {}
        self.next_check = 0.0

    def heard(
        self,
        key: bytes,
        event: Any,
        last_ts: float,
        silent_after_s: float | None,
        wall: float,
        mono: float,
        silent_for_s: float = 0.0,
    ) -> None:
        """A batch applied records of the unit (or, with `silent_for_s`, a partition came with its unit silent that
        long); `silent_after_s` None when it is not to be watched now."""
        watch = self.watched.get(key)
        if watch is not None and watch.last_ts == last_ts:
            watch.event = event  # an operator action or a copy: no new data, the wait goes on
            return
        if silent_after_s is None or abs(wall - last_ts) > LIVE_WITHIN_S:
            self.watched.pop(key, None)
        else:
            arrived = mono - silent_for_s
            self.watched[key] = Watch(event, last_ts, arrived, arrived + silent_after_s)

    def time_to_look(self, mono: float) -> bool:
        """At most once each `CHECK_EVERY_S`."""
        if mono < self.next_check:
            return False
        self.next_check = mono + CHECK_EVERY_S
        return True

    def due(self, mono: float, actives: set[Any]) -> list[tuple[bytes, Watch, float]]:
        """The units whose silence is to be judged now, each with the time on its own clock. A unit of a partition
        this worker no longer has is forgotten."""
        out: list[tuple[bytes, Watch, float]] = []
        for key, watch in list(self.watched.items()):
            if watch.event.message.tp not in actives:
                del self.watched[key]
            elif mono >= watch.next_check:
                watch.next_check = mono + RECHECK_RAISED_S
                out.append((key, watch, watch.last_ts + mono - watch.arrived))
        return out
