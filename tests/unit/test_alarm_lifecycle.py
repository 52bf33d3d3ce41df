"""ISA-18.2 lifecycle: every transition, shelving expiry, suppression by equipment state, dedup, chattering."""

from __future__ import annotations

from linewatch.services.alerter.lifecycle import Alarm, Settings, State, limit_condition


def states(events: list) -> list[tuple[State, State]]:  # type: ignore[type-arg]
    return [(e.previous, e.state) for e in events]


def test_activation_ack_and_return_to_normal() -> None:
    alarm = Alarm("S1-DRY-01/dew_point.high")
    assert states(alarm.observe(0, True)) == [(State.NORMAL, State.UNACKNOWLEDGED)]
    [ack] = alarm.acknowledge(5, "ana", "door seal checked")
    assert (ack.previous, ack.state, ack.user, ack.comment) == (
        State.UNACKNOWLEDGED,
        State.ACKNOWLEDGED,
        "ana",
        "door seal checked",
    )
    assert states(alarm.observe(10, False)) == [(State.ACKNOWLEDGED, State.NORMAL)]


def test_a_comment_is_audited_without_changing_the_state_or_notifying() -> None:
    alarm = Alarm("a")
    alarm.observe(0, True)
    [note] = alarm.act("comment", 5, "ana", "maintenance called")
    assert (note.previous, note.state, note.user, note.comment) == (
        State.UNACKNOWLEDGED,
        State.UNACKNOWLEDGED,
        "ana",
        "maintenance called",
    )
    assert not note.annunciate and alarm.state == State.UNACKNOWLEDGED and not alarm.acknowledged


def test_return_to_normal_unacknowledged_then_ack_or_reactivation() -> None:
    alarm = Alarm("a")
    alarm.observe(0, True)
    assert states(alarm.observe(1, False)) == [(State.UNACKNOWLEDGED, State.RTN_UNACKNOWLEDGED)]
    assert states(alarm.observe(2, True)) == [(State.RTN_UNACKNOWLEDGED, State.UNACKNOWLEDGED)]
    alarm.observe(3, False)
    assert states(alarm.acknowledge(4, "ana")) == [(State.RTN_UNACKNOWLEDGED, State.NORMAL)]


def test_latching_alarm_stays_in_alarm_until_acknowledged() -> None:
    alarm = Alarm("a", Settings(latching=True))
    alarm.observe(0, True)
    assert alarm.observe(1, False) == [] and alarm.state == State.UNACKNOWLEDGED
    assert states(alarm.acknowledge(2, "ana")) == [(State.UNACKNOWLEDGED, State.NORMAL)]


def test_repeated_observations_are_deduplicated() -> None:
    alarm = Alarm("a")
    events = [e for t in range(100) for e in alarm.observe(t, True)]
    assert len(events) == 1
    assert alarm.acknowledge(101, "ana") and alarm.acknowledge(102, "ana") == []


def test_on_delay_and_off_delay() -> None:
    alarm = Alarm("a", Settings(on_delay_s=10, off_delay_s=30))
    assert alarm.observe(0, True) == [] and alarm.observe(9, True) == []
    assert alarm.observe(9.5, False) == [] and alarm.observe(12, True) == []  # the blip restarts the delay
    assert states(alarm.observe(22, True)) == [(State.NORMAL, State.UNACKNOWLEDGED)]
    assert alarm.observe(30, False) == [] and alarm.observe(59, False) == []
    assert states(alarm.observe(60, False)) == [(State.UNACKNOWLEDGED, State.RTN_UNACKNOWLEDGED)]


def test_timed_shelving_expires_by_itself() -> None:
    alarm = Alarm("a")
    alarm.observe(0, True)
    assert states(alarm.shelve(1, "ana", duration_s=600, comment="known, maintenance booked")) == [
        (State.UNACKNOWLEDGED, State.SHELVED)
    ]
    assert alarm.observe(300, True) == [] and alarm.observe(301, False) == [] and alarm.observe(302, True) == []
    [expired] = alarm.tick(601)
    assert (expired.state, expired.cause, expired.annunciate) == (State.UNACKNOWLEDGED, "shelving expired", True)


def test_one_shot_shelving_ends_when_the_condition_clears() -> None:
    alarm = Alarm("a")
    alarm.observe(0, True)
    alarm.acknowledge(1, "ana")
    alarm.shelve(2, "ana")
    assert alarm.tick(10_000) == [] and alarm.state == State.SHELVED
    [cleared] = alarm.observe(10_001, False)
    assert (cleared.previous, cleared.state) == (State.SHELVED, State.NORMAL)
    assert "one-shot" in cleared.cause


def test_manual_unshelve() -> None:
    alarm = Alarm("a")
    alarm.shelve(0, "ana", duration_s=3600)
    assert states(alarm.unshelve(5, "ben")) == [(State.SHELVED, State.NORMAL)]
    assert alarm.unshelve(6, "ben") == []


def test_suppressed_by_design_while_equipment_is_not_running() -> None:
    alarm = Alarm("a")
    assert states(alarm.observe(0, False, equipment_running=False)) == [(State.NORMAL, State.SUPPRESSED)]
    assert alarm.observe(1, True, equipment_running=False) == []  # no annunciation while suppressed
    [back] = alarm.observe(2, True, equipment_running=True)
    assert (back.previous, back.state, back.annunciate) == (State.SUPPRESSED, State.UNACKNOWLEDGED, True)
    alarm.acknowledge(3, "ana")
    alarm.observe(4, True, equipment_running=False)
    assert states(alarm.observe(5, False, equipment_running=True)) == [(State.SUPPRESSED, State.NORMAL)]


def test_out_of_service_and_back() -> None:
    alarm = Alarm("a")
    assert states(alarm.remove_from_service(0, "ana", "transmitter replaced")) == [(State.NORMAL, State.OUT_OF_SERVICE)]
    assert alarm.observe(1, True) == [] and alarm.shelve(2, "ana") == [] and alarm.acknowledge(3, "ana") == []
    assert states(alarm.return_to_service(4, "ana")) == [(State.OUT_OF_SERVICE, State.ACKNOWLEDGED)]


def test_chattering_is_detected_and_not_annunciated_until_quiet() -> None:
    alarm = Alarm("a", Settings(chatter_count=3, chatter_window_s=60))
    annunciated = []
    for t in range(0, 40, 5):  # on/off every 5 s
        for event in alarm.observe(t, t % 10 == 0):
            annunciated.append(event.annunciate)
    assert alarm.chattering
    assert annunciated[:4] == [True, True, True, True] and not any(annunciated[5:])
    alarm.tick(200)
    assert not alarm.chattering
    alarm.acknowledge(201, "ana")
    [event] = alarm.observe(202, True)
    assert event.annunciate


def test_priority_is_carried_on_every_event() -> None:
    from linewatch.services.alerter.lifecycle import Priority

    alarm = Alarm("a", Settings(priority=Priority.CRITICAL))
    assert {e.priority for e in alarm.observe(0, True) + alarm.acknowledge(1, "ana")} == {Priority.CRITICAL}


def test_limit_deadband() -> None:
    assert not limit_condition(-35.5, -35.0, high=True, deadband=1.0, active=False)
    assert limit_condition(-34.9, -35.0, high=True, deadband=1.0, active=False)
    assert limit_condition(-35.5, -35.0, high=True, deadband=1.0, active=True)  # still inside the deadband
    assert not limit_condition(-36.1, -35.0, high=True, deadband=1.0, active=True)
    assert limit_condition(1.4, 1.5, high=False, deadband=0.1, active=False)
    assert limit_condition(1.55, 1.5, high=False, deadband=0.1, active=True)
