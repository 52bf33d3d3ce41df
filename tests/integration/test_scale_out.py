"""Scale-out: two workers of each Kafka service on 12 partitions share the work; `kill -9` of one worker of each
mid-stream, then its restart, loses no sample, stores no point twice, keeps every alarm of an uncrashed reference
run and notifies each alarm at most twice."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from support import (
    Hook,
    SimulatorThread,
    commits_short_of_end,
    faulty_plan,
    keep_broker_state,
    missing_alarm_events,
    per_sensor_mismatches,
    read_quiet,
    records_quiet,
    reference_alarm_events,
    total,
    unthrottled_rules,
    wait_for_counts,
)

from linewatch.core.contract import (
    AlarmEvent,
    alarm_event_decoder,
    deadletter_decoder,
    raises_alarm,
    scores_decoder,
    stats_decoder,
    telemetry_decoder,
)
from linewatch.core.kafka import TopicReader, ensure_topics
from linewatch.core.plant import PlantModel
from linewatch.core.settings import KafkaSettings
from linewatch.services.alerter.agents import notify_decoder
from linewatch.services.alerter.state import state_decoder
from linewatch.services.scorer import registry, training
from linewatch.services.scorer.agents import scores_for
from linewatch.services.scorer.engine import PlantScorer, unit_decoder
from linewatch.services.scorer.rollout import ModelSet
from linewatch.simulation.plant_sim import simulated
from linewatch.storage.measurements import ALARM_EVENT, ANOMALY
from linewatch.tools.devstack import DevStack, free_port, wait_until
from linewatch.tools.launcher import ServiceProcess

pytestmark = [pytest.mark.production, pytest.mark.reliability, pytest.mark.slow]
log = logging.getLogger(__name__)
KEY = "scale-out-test-key"
SCORED_CLASSES = ("planetary_mill", "dry_room")
WORKERS = ("validator", "scorer", "alerter", "writer")


def test_two_workers_of_each_service_survive_a_kill_9_of_one_each(
    stack: DevStack, plant: PlantModel, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap, partitions=12)
    ensure_topics(kafka, kafka.topics.all())
    root = tmp_path / "registry"
    root.mkdir()
    start = math.floor(time.time() / 7200) * 7200 - 10 * 86400
    frames = (f for f in simulated(plant, start, 2, seed=1) if f.equipment_class in SCORED_CLASSES)
    models, _ = training.fit(plant, training.collect(plant, frames), contexts="pooled")
    registry.point(root, "ACTIVE", registry.save(root, KEY.encode(), models, {"source": "test"}))
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = unthrottled_rules(tmp_path)
    env = stack.service_env() | {
        "LINEWATCH_KAFKA__PARTITIONS": "12",
        "LINEWATCH_KAFKA__SESSION_TIMEOUT_S": "6",
        "LINEWATCH_REGISTRY": str(root),
        "LINEWATCH_MODEL_SIGNING_KEY": KEY,
        "LINEWATCH_RULES_FILE": str(rules),
        "LINEWATCH_NOTIFY__WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook",
        "LINEWATCH_API_PORT": "0",
    }

    def worker(name: str, number: int) -> ServiceProcess:
        return ServiceProcess(name, env, tmp_path / f"{name}-{number}.log")

    workers = {(name, n): worker(name, n).start() for name in WORKERS for n in (1, 2)}
    hook_before = len(Hook.received)
    try:
        faults = [
            ("mill_overheating", "S1-MILL-01", 1800),
            ("moisture_ingress", "S2-DRY-01", 4000),
            ("h2s_rise", "S1-DRY-01", 6000),
        ]
        simulation = SimulatorThread(
            plant, kafka.bootstrap_servers, faulty_plan(plant, 4, 2.4 * 3600, faults, seed=12, frame_samples=50)
        )
        simulation.start()
        sent = simulation.sent

        def alarm_events(quiet_s: float = 0.3) -> list[AlarmEvent]:
            return [alarm_event_decoder.decode(v) for v in read_quiet(kafka, kafka.topics.alarms, quiet_s)]

        # Mid-stream: as soon as the first alarm is out, one worker of each service dies, and comes back.
        wait_until("a first alarm", lambda: any(e.state == "unacknowledged" for e in alarm_events()), 240, 0.3)
        frames_at_kill = len(sent)
        for name in WORKERS:
            workers[name, 1].kill()
        killed_at = time.monotonic()
        for name in WORKERS:
            workers[name, 1] = worker(name, 1).start()
        done = simulation.result()

        # 0 samples lost, 0 duplicates: InfluxDB holds exactly what was sent, sensor by sensor.
        def alive() -> bool:
            return all(w.alive() for w in workers.values())

        stored = wait_for_counts(stack.influxd, done.expected_values, timeout_s=300, alive=alive)
        recovered_s = time.monotonic() - killed_at
        assert per_sensor_mismatches(done.expected_values, stored) == []
        assert total(stored) == total(done.expected_values)

        # What an uncrashed scorer (in this process, same model, exactly the frames sent) scores is in InfluxDB,
        # once. A unit's scoring state comes back from the changelog, where Tansu's short end offsets (platform
        # notes) may leave a unit taken over a little behind (test_scorer_resume): its settle ends a few samples
        # early or late. 1 % leeway each way; 0 to 2 samples seen.
        models_ = ModelSet(root, KEY.encode())
        models_.refresh()
        frames_sent = [telemetry_decoder.decode(payload) for payload in sent]
        reference_scores = {
            (m.equipment_id, m.role, round(s.ts.timestamp() * 1e9))
            for ms in scores_for(PlantScorer(plant), models_, frames_sent)
            for m in ms
            for s in m.samples
        }

        def stored_scores() -> set[tuple[str, str, int]]:
            result = stack.influxd.query(f'SELECT "score" FROM {ANOMALY} GROUP BY "equipment", "role"', stack.database)
            return {
                (series["tags"]["equipment"], series["tags"]["role"], row[0])
                for series in result["results"][0].get("series", [])  # type: ignore[index]
                for row in series["values"]
            }

        deadline = time.monotonic() + 60
        while len(scored := stored_scores()) < len(reference_scores) and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(3)  # what the writer still has in hand
        scored = stored_scores()
        missing, extra = reference_scores - scored, scored - reference_scores
        by_unit = Counter(unit for unit, _, _ in missing)

        # Tansu (memory only) sometimes drops a partition's log after a client is killed mid-request: its offsets
        # start again at 0 under the consumer groups' committed ones, which then skip the new records. Seen as
        # scores or alarm events the writer stored that the topic no longer holds: the broker lost acknowledged
        # records, which is not linewatch's doing (Apache Kafka keeps them), so the run proves nothing either way.
        # Also seen as fewer records on a topic than its producers were acknowledged for: the scorers count the
        # samples they scored, and the alerters the alarm events they sent, only once Kafka acknowledged them (each
        # instance's last report; the killed one's is up to a second old, so this can only undercount).
        score_records_whole = records_quiet(kafka, kafka.topics.scores)  # where they lie, for a failure below
        score_records = [scores_decoder.decode(record.value) for record in score_records_whole]
        on_topic = {(m.equipment_id, m.role, round(x.ts.timestamp() * 1e9)) for m in score_records for x in m.samples}
        held_scored = sum(len(m.samples) for m in score_records if m.role == "active")
        result = stack.influxd.query(f'SELECT "event_id" FROM {ALARM_EVENT}', stack.database)
        stored_events = {row[1] for s in result["results"][0].get("series", []) for row in s["values"]}  # type: ignore[index]
        events_held = alarm_events(2.0)
        vanished_events = stored_events - {e.event_id for e in events_held}
        reader, reports = TopicReader(kafka, kafka.topics.stats), list[bytes]()
        reader.read(reports.append, 3.0)  # the services report every second: never quiet, so a fixed time
        reader.close()
        last_counters: dict[tuple[str, str], dict[str, int]] = {}
        for report in map(stats_decoder.decode, reports):
            last_counters[report.service, report.instance] = report.counters
        acked_scored = sum(c.get("samples_scored", 0) for (s, _), c in last_counters.items() if s == "scorer")
        acked_events = sum(c.get("alarm_events", 0) for (s, _), c in last_counters.items() if s == "alerter")
        lost_scores, lost_events = acked_scored - held_scored, acked_events - len(events_held)
        if scored - on_topic or vanished_events or lost_scores > 0 or lost_events > 0:
            pytest.xfail(
                f"the broker lost acknowledged records: {len(scored - on_topic)} stored scores and "
                f"{len(vanished_events)} stored alarm events it no longer holds; {lost_scores} scored samples and "
                f"{lost_events} alarm events fewer on the topics than acknowledged to the services"
            )
        leeway = 0.01 * len(reference_scores)
        # On failure: whether the missing ones were produced (on the topic, so not kept downstream) or never
        # produced, when (per unit, seconds after the first frame), and each scorer's last counters (frames it
        # skipped as already applied, samples it scored).
        if len(missing) > leeway or len(extra) > leeway:
            first_ts = min(frame.samples[0].ts.timestamp() for frame in frames_sent)
            missing_at: dict[str, list[float]] = {}
            for unit, _, ts in missing:
                missing_at.setdefault(unit, []).append(ts / 1e9 - first_ts)
            spans = {unit: (min(at), max(at)) for unit, at in missing_at.items()}
            scorer_counters = {
                stats.instance: {
                    k: v
                    for k, v in stats.counters.items()
                    if k in ("redelivered_skipped", "frame_copies_skipped", "samples_scored")
                }
                for stats in map(stats_decoder.decode, reports)
                if stats.service == "scorer"
            }
            # Whether the valid topic still holds the missing units' frames at all (a log the broker dropped and
            # began again at offset 0 makes a unit's stored offsets skip the new records), and at which offsets.
            held: dict[str, list[int]] = {unit: [] for unit in by_unit}
            for record in records_quiet(kafka, kafka.topics.valid, 3.0):
                if (unit := (record.key or b"").decode()) in held:
                    held[unit].append(record.offset)
            frames_of = Counter(frame.equipment_id for frame in frames_sent if frame.equipment_id in by_unit)
            on_valid = {
                unit: (len(offsets), frames_of[unit], min(offsets, default=-1)) for unit, offsets in held.items()
            }
            # Where the units' scores lie on their partition of the scores topic (a log the broker began again shows
            # as offsets from 0 under later samples), and what the scorers' table said of them, write by write.
            scores_at: dict[str, list[tuple[int, int, float]]] = {unit: [] for unit in by_unit}
            for record, decoded in zip(score_records_whole, score_records, strict=True):
                if (unit := (record.key or b"").decode()) in scores_at:
                    first = decoded.samples[0].ts.timestamp() - first_ts
                    scores_at[unit].append((record.partition, record.offset, round(first)))
            history: dict[str, list[tuple[int, int, float | None, dict[str, int], int]]] = {u: [] for u in by_unit}
            for record in records_quiet(kafka, "scorer-scorer-state-changelog", 3.0):
                if (unit := (record.key or b"").decode()) in history and record.value:
                    state = unit_decoder.decode(record.value)
                    since = None if state.running_since is None else round(state.running_since - first_ts)
                    history[unit].append((record.partition, record.offset, since, state.applied, len(state.streams)))
            pytest.fail(
                f"{len(missing)} reference scores missing, {len(extra)} extra; by unit {dict(by_unit)}; "
                f"{len(missing & on_topic)} of the missing on the scores topic; missing from/to (s after the first "
                f"frame) {spans}; frames sent before the kill {frames_at_kill}; scorers' counters {scorer_counters}; "
                f"the units' frames on the valid topic (records, frames sent, lowest offset) {on_valid}; their scores "
                f"(partition, offset, first sample s) first/last {[(u, a[:3], a[-3:]) for u, a in scores_at.items()]}; "
                f"their state (partition, offset, running since s, applied, streams) first/last "
                f"{[(u, len(h), h[:4], h[-4:]) for u, h in history.items()]}"
            )

        # Every alarm event of an uncrashed run (the same engine over exactly the frames sent) is out.
        reference = reference_alarm_events(plant, sent)
        raised = [e for e in reference if raises_alarm(e.kind, e.state, e.previous)]
        assert len({e.alarm_id for e in raised}) >= 3, [e.alarm_id for e in raised]
        expected = {e.event_id for e in reference}
        try:
            wait_until("every reference alarm event", lambda: expected <= {e.event_id for e in alarm_events()}, 240, 1)
        except TimeoutError:
            pytest.fail(missing_alarm_events(kafka, reference, alarm_events(2.0)))
        live = alarm_events(2.0)
        counts = Counter(e.event_id for e in live)

        # At most one duplicate notification per alarm (at-least-once across the kill), none missing: for each
        # raise on the topic that the rules route (what the notifier saw, annunciation included).
        time.sleep(3)
        notified = Counter(Hook.received[hook_before:])
        per_alarm = {}
        for event in {e.event_id: e for e in live if raises_alarm(e.kind, e.state, e.previous)}.values():
            if event.priority in ("medium", "high", "critical") and event.annunciate:  # the routed priorities
                per_alarm[event.event_id] = sum(
                    c for n, c in notified.items() if event.alarm_id in n and event.ts.isoformat() in n
                )
        letters = [deadletter_decoder.decode(v) for v in read_quiet(kafka, kafka.topics.deadletter)]
        failed = [(letter.reason, letter.detail) for letter in letters]
        wrong = {event_id: n for event_id, n in per_alarm.items() if not 1 <= n <= 2}
        assert per_alarm and not wrong, (wrong, len(per_alarm), failed)
        assert alive()

        # Once the input stops, every group commits to its end: a commit held on a record never acknowledged (it
        # waits for the next rebalance or restart to read the record again) would leave its partition short here.
        t = kafka.topics
        inputs = {
            "validator": [t.raw],
            "scorer": [t.valid],
            "alerter": [t.valid, t.scores, t.alarm_actions, t.alarms],
            "writer": [t.valid, t.scores, t.alarms],
        }
        with contextlib.suppress(TimeoutError):
            wait_until("every commit at its end", lambda: not commits_short_of_end(kafka, inputs), 30, 1.0)
        commits_short = commits_short_of_end(kafka, inputs)
        summary = {
            "frames_before_kill": frames_at_kill,
            "frames_total": len(sent),
            "values_stored": total(stored),
            "scored_samples": len(scored),
            "reference_scored_samples": len(reference_scores),
            "reference_samples_not_scored": len(missing),
            "scored_beyond_reference": len(extra),
            "reference_alarm_events": len(expected),
            "alarm_events_on_topic": sum(counts.values()),
            "duplicated_alarm_events": sum(1 for c in counts.values() if c > 1),
            "notifications_per_alarm": dict(Counter(per_alarm.values())),
            "kill_to_all_stored_s": round(recovered_s, 1),
            "commits_short_of_end": commits_short,
        }
        log.info("scale-out %s", summary, extra=summary)  # the figures in the message too: pytest shows only it
        assert not commits_short, f"commits short of their inputs' end 30 s after the input stopped: {summary}"
    except BaseException:
        keep_broker_state(
            kafka,
            {
                kafka.topics.valid: lambda v: telemetry_decoder.decode(v).samples[0].ts,
                kafka.topics.scores: lambda v: scores_decoder.decode(v).samples[0].ts,
                kafka.topics.alarms: lambda v: alarm_event_decoder.decode(v).event_id,
                "scorer-scorer-state-changelog": lambda v: unit_decoder.decode(v).applied,
                "alerter-alarm-state-changelog": lambda v: state_decoder.decode(v).applied,
                "alerter-notify-state-changelog": lambda v: notify_decoder.decode(v).applied,
            },
            ["validator", "scorer", "alerter", "writer"],
            tmp_path / "broker-state.jsonl",
        )
        raise
    finally:
        hook.shutdown()
        for process in workers.values():
            process.stop()
    for name, n in workers:
        assert "Traceback" not in (tmp_path / f"{name}-{n}.log").read_text(), f"{name}-{n}"
