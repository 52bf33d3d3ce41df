"""The no-data alarm on the real broker: a running unit that stops sending live raises it after its own wait (3
frame spacings plus the rule's on-delay), stamped on the unit's clock; its next frame clears it; a unit whose data
was an hour old when it arrived (a replay, a backlog) raises nothing."""

from __future__ import annotations

import time
from pathlib import Path

from support import frame, records_quiet

from linewatch.core.contract import AlarmEvent, alarm_event_decoder, encoder
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.alerter.lifecycle import Priority
from linewatch.services.alerter.rules import ConditionRule, load_rules, write_rules
from linewatch.services.alerter.silence import CHECK_EVERY_S
from linewatch.services.alerter.state import state_decoder
from linewatch.services.simulator.runner import KafkaPublisher
from linewatch.tools.devstack import DevStack, free_port, wait_until
from linewatch.tools.launcher import ServiceProcess

ON_DELAY_S = 2.0


def quick_env(stack: DevStack, tmp_path: Path, on_delay_s: float) -> dict[str, str]:
    rules = load_rules()
    quick = rules.conditions | {"no_data": ConditionRule(priority=Priority.HIGH, on_delay_s=on_delay_s)}
    rules_file = write_rules(rules.model_copy(update={"conditions": quick}), tmp_path / "rules.yaml")
    return stack.service_env() | {
        "LINEWATCH_RULES_FILE": str(rules_file),
        "LINEWATCH_API_PORT": str(free_port()),
        "LINEWATCH_REGISTRY": str(tmp_path / "no-models"),
    }


def no_data_events(kafka: KafkaSettings) -> list[tuple[float, AlarmEvent]]:
    """(record time, event) of each no-data alarm event on the alarms topic."""
    records = records_quiet(kafka, kafka.topics.alarms, 0.5)
    events = [(r.timestamp / 1000, alarm_event_decoder.decode(r.value)) for r in records]
    return [(at, e) for at, e in events if e.condition == "no_data"]


def test_a_unit_that_stops_sending_live_raises_no_data_and_its_next_frame_clears_it(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    env = quick_env(stack, tmp_path, ON_DELAY_S)
    services = [ServiceProcess(name, env, tmp_path / f"{name}.log").start() for name in ("validator", "alerter")]
    try:
        publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
        now = float(int(time.time()))
        for k in range(5):  # one sample a second, the last a second old: 1-s spacing, so a 3 s + 2 s wait
            publisher.send_frame("S1-DRY-01", encoder.encode(frame(plant, "S1-DRY-01", now - 5 + k, 1)))
            publisher.send_frame("S1-MILL-01", encoder.encode(frame(plant, "S1-MILL-01", now - 3600 + k, 1)))
        publisher.close()  # sent and acknowledged
        sent_at = time.time()

        wait_until("the no-data alarm", lambda: bool(no_data_events(kafka)), 90, 0.5)
        [(raised_at, raised)] = [(at, e) for at, e in no_data_events(kafka) if e.state == "unacknowledged"]
        assert raised.alarm_id == "S1-DRY-01/no_data" and raised.priority == "high"  # dry-room-no-data
        assert raised.ts.timestamp() == now - 1 + 3 + ON_DELAY_S  # the unit's clock: last sample + wait
        assert raised_at - sent_at >= 3 + ON_DELAY_S - 1.5  # not before the wait (the last sample was 1 s old)
        assert "no data for 5 s" in raised.message

        publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
        publisher.send_frame("S1-DRY-01", encoder.encode(frame(plant, "S1-DRY-01", float(int(time.time())), 1)))
        publisher.close()
        wait_until("the no-data alarm cleared", lambda: len(no_data_events(kafka)) == 2, 60, 0.5)
        states = [(e.alarm_id, e.state) for _, e in no_data_events(kafka)]
        assert states == [("S1-DRY-01/no_data", "unacknowledged"), ("S1-DRY-01/no_data", "rtn_unacknowledged")]
        time.sleep(3 + ON_DELAY_S + 2)  # the one frame's unit is watched again; the old mill's never was
        assert all(e.alarm_id != "S1-MILL-01/no_data" for _, e in no_data_events(kafka))
        assert all(s.alive() for s in services)
    finally:
        for service in services:
            service.stop()


def test_a_unit_that_went_silent_while_the_alerter_was_down_is_alarmed_by_the_next_one_and_a_unit_that_spoke_is_not(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    """S1-DRY-01 stops while the alerter is down: the restarted one alarms it. S2-DRY-01 goes on sending meanwhile,
    longer than its wait: its frames wait in the partition, and the restarted alerter, having applied them, does
    not take it for silent."""
    on_delay_s = 12.0
    env = quick_env(stack, tmp_path, on_delay_s)
    validator = ServiceProcess("validator", env, tmp_path / "validator.log").start()
    first = ServiceProcess("alerter", env, tmp_path / "alerter-1.log").start()
    second = None
    try:
        publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
        now = float(int(time.time()))
        for k in range(5):
            for unit in ("S1-DRY-01", "S2-DRY-01"):
                publisher.send_frame(unit, encoder.encode(frame(plant, unit, now - 5 + k, 1)))
        publisher.close()

        def stored_last_ts(unit: str) -> float:
            changelog = records_quiet(kafka, "alerter-alarm-state-changelog", 0.5)
            return max((state_decoder.decode(r.value).last_ts for r in changelog if r.key == unit.encode()), default=0)

        wait_until("the units' frames in the alerter's state", lambda: stored_last_ts("S2-DRY-01") == now - 1, 60, 0.5)
        first.kill()  # kill -9, well before S1-DRY-01's wait (3 s + 12 s from its last sample) is over
        assert time.time() < now - 1 + 3 + on_delay_s - 2, "the first alerter took too long to store the frames"
        assert no_data_events(kafka) == []
        publisher = KafkaPublisher(kafka.bootstrap_servers, kafka.topics.raw, kafka.topics.lots)
        for k in range(25):  # S2-DRY-01 speaks on, a second a frame, past its own wait, while no alerter listens
            publisher.send_frame("S2-DRY-01", encoder.encode(frame(plant, "S2-DRY-01", now + k, 1)))
            time.sleep(max(0.0, now + k + 1 - time.time()))
        publisher.close()
        second = ServiceProcess("alerter", env, tmp_path / "alerter-2.log").start()
        wait_until("the no-data alarm from the restarted alerter", lambda: bool(no_data_events(kafka)), 120, 0.5)
        wait_until("S2-DRY-01's frames applied", lambda: stored_last_ts("S2-DRY-01") == now + 24, 60, 0.5)
        time.sleep(2 * CHECK_EVERY_S)
        [(_, raised)] = no_data_events(kafka)
        assert raised.alarm_id == "S1-DRY-01/no_data" and raised.state == "unacknowledged"
        assert raised.ts.timestamp() == now - 1 + 3 + on_delay_s
    finally:
        for service in (validator, first, second):
            if service is not None:
                service.stop()
