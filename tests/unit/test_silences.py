"""Which units the alerter watches for silence: heard live, on this worker's partitions, judged once a second at
most, on each unit's own clock."""

from __future__ import annotations

from dataclasses import dataclass

from linewatch.services.alerter.silence import LIVE_WITHIN_S, RECHECK_RAISED_S, Silences


@dataclass(frozen=True)
class Message:
    tp: tuple[str, int]


@dataclass(frozen=True)
class Event:
    message: Message


WALL = 1_800_000_000.0
VALID_0, VALID_1 = ("valid", 0), ("valid", 1)


def test_units_heard_live_are_due_after_their_wait_on_their_own_clock() -> None:
    silences = Silences()
    silences.heard(b"A", Event(Message(VALID_0)), WALL - 0.5, 36.0, WALL, 100.0)
    silences.heard(b"B", Event(Message(VALID_0)), WALL - 2 * LIVE_WITHIN_S, 36.0, WALL, 100.0)  # a replay's
    silences.heard(b"C", Event(Message(VALID_0)), WALL, None, WALL, 100.0)  # stopped
    assert silences.time_to_look(130.0) and silences.due(130.0, {VALID_0}) == []
    assert silences.due(135.5, {VALID_0}) == []  # A is due at 136
    assert not silences.time_to_look(130.5)  # the last look was under a second ago
    [(key, _, now)] = silences.due(136.5, {VALID_0})
    assert key == b"A" and now == WALL - 0.5 + 36.5
    # Judged again only after a while (escalation, shelving), not every second.
    assert silences.due(138.0, {VALID_0}) == []
    assert [k for k, _, _ in silences.due(136.5 + RECHECK_RAISED_S, {VALID_0})] == [b"A"]


def test_a_unit_found_silent_in_a_partition_taken_is_due_from_its_last_sample() -> None:
    silences = Silences()
    # Its last sample 30 s before the partition came to this worker, 36 s to wait: due 6 s after.
    silences.heard(b"A", Event(Message(VALID_0)), WALL - 30.0, 36.0, WALL, 100.0, silent_for_s=30.0)
    assert silences.due(105.5, {VALID_0}) == []
    [(_, _, now)] = silences.due(106.0, {VALID_0})
    assert now == WALL - 30.0 + 36.0


def test_new_data_restarts_the_wait_and_a_partition_given_away_is_forgotten() -> None:
    silences = Silences()
    silences.heard(b"A", Event(Message(VALID_0)), WALL, 10.0, WALL, 100.0)
    silences.heard(b"B", Event(Message(VALID_1)), WALL, 10.0, WALL, 100.0)
    silences.heard(b"A", Event(Message(VALID_0)), WALL + 5, 10.0, WALL + 5, 105.0)
    silences.heard(b"A", Event(Message(VALID_0)), WALL + 5, 10.0, WALL + 9, 109.0)  # an action: no new data
    assert [k for k, _, _ in silences.due(112.0, {VALID_0})] == []
    assert [k for k, _, _ in silences.due(116.0, {VALID_0})] == [b"A"]
    assert b"B" not in silences.watched  # partition 1 went to another worker
