"""The broker is killed with `kill -9` mid-run and started again empty (Tansu keeps nothing, like a Kafka whose
volume was lost): every pipeline service notices, reports the loss (a dead letter per lost input topic and the
`broker_state_lost` counter), exits 75 and is started again by the supervisor that `linewatch up` uses; new data
then flows end to end (readings and scores in InfluxDB), readiness says so, and no service floods its log while
the broker is away."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from support import read_dead_letters, simulate

from linewatch.core.health import EXIT_BROKER_STATE_LOST, BrokerWatch
from linewatch.core.kafka import ensure_topics
from linewatch.core.plant import PlantModel
from linewatch.core.services import PIPELINE
from linewatch.core.settings import HealthSettings, KafkaSettings
from linewatch.core.stats import StatsCounter
from linewatch.core.stopping import STOP_OVERRUN_EXIT
from linewatch.services.simulator.runner import RunPlan
from linewatch.tools.devstack import DevStack, free_port, wait_until
from linewatch.tools.drill import pipeline_env, train
from linewatch.tools.launcher import ServiceProcess, Supervisor

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
log = logging.getLogger(__name__)
AWAY_S = 8.0


def count(stack: DevStack, query: str) -> int:
    series = stack.influxd.query(query, stack.database)["results"][0].get("series", [])  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


def test_broker_killed_and_restarted_empty_every_service_recovers_and_reports_it(
    stack: DevStack, kafka: KafkaSettings, plant: PlantModel, tmp_path: Path
) -> None:
    env = pipeline_env(stack, tmp_path) | {"LINEWATCH_HEALTH__CHECK_INTERVAL_S": "1"}
    train(env, 0.5)
    processes = [
        ServiceProcess(name, env, tmp_path / f"{name}.log", health_port=free_port()).start() for name in PIPELINE
    ]
    supervisor = Supervisor(processes, reset=stack.broker.restart)

    def supervise_until(what: str, condition: object, timeout_s: float) -> None:
        def check() -> bool:
            supervisor.check()
            return bool(condition() if callable(condition) else condition)

        wait_until(what, check, timeout_s, poll_s=0.5)

    try:
        begin = (int(time.time()) // 7200 - 3) * 7200
        simulate(plant, kafka.bootstrap_servers, RunPlan(begin, 1200, 100, None, seed=3))
        supervise_until("readings stored", lambda: count(stack, "SELECT count(temperature) FROM telemetry") > 0, 90)
        supervise_until("every service ready", lambda: all(p.readiness()[0] for p in processes), 60)

        assert stack.broker.process is not None
        stack.broker.process.kill()  # kill -9
        killed = time.time()
        supervise_until("readiness says the broker is away", lambda: not any(p.readiness()[0] for p in processes), 20)
        away = {p.name: p.readiness()[1] for p in processes}
        time.sleep(max(0.0, AWAY_S - (time.time() - killed)))
        stack.broker.start()  # same port, nothing in it
        restarted = time.time()

        supervise_until(
            "every service restarted for the broker's loss",
            lambda: {r.name for r in supervisor.restarts if r.exit_code == EXIT_BROKER_STATE_LOST} == set(PIPELINE),
            90,
        )
        after = begin + 1200
        readings_after = f"SELECT count(temperature) FROM telemetry WHERE time >= {after}s"
        scores_after = f"SELECT count(score) FROM anomaly WHERE time >= {after}s"
        simulate(plant, kafka.bootstrap_servers, RunPlan(after, 1200, 100, None, seed=4))
        supervise_until("new readings stored after the loss", lambda: count(stack, readings_after) > 0, 120)
        supervise_until("new scores stored after the loss", lambda: count(stack, scores_after) > 0, 120)
        supervise_until("every service ready again", lambda: all(p.readiness()[0] for p in processes), 90)
        recovered_s = time.time() - restarted
        letters = [d for d in read_dead_letters(kafka, at_least=4) if d.reason == "broker_state_lost"]
        lost_counters = count(stack, "SELECT max(broker_state_lost) FROM service_stats")
    finally:
        for process in processes:
            process.stop()

    assert all("broker unreachable" in why for why in away.values()), away
    assert not supervisor.failing()
    # One dead letter per service and lost input topic, naming the topic and what was committed on it.
    reported = Counter(letter.stage for letter in letters)
    for name in PIPELINE:
        assert reported[name] >= 1, reported
    assert all("was recreated by the broker" in letter.detail for letter in letters)
    assert lost_counters == 1
    # A few lines a second at most while the broker was away: clients' repeated complaints are held back.
    for name in PIPELINE:
        stamps = [
            datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
            for line in (tmp_path / f"{name}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        during = Counter(int(t) for t in stamps if killed <= t < restarted)
        assert max(during.values(), default=0) <= 10, (name, sorted(during.items()))
        assert sum(during.values()) <= 3 * (restarted - killed), (name, sum(during.values()))
    log.info(
        "broker loss figures",
        extra={"away_s": round(restarted - killed, 1), "recovered_s": round(recovered_s, 1), "letters": len(letters)},
    )


def test_a_loss_before_the_watch_first_looked_is_still_seen(stack: DevStack, tmp_path: Path) -> None:
    """A service consumes from its start; the watch looks every few seconds. A broker lost between the two left the
    service reading the new topics from its old positions, skipping what they held below them (a CI run lost 680
    values so): the watch starts from the ids the service saw at its start."""
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
    at_start = ensure_topics(kafka, kafka.topics.all())
    assert set(at_start) == set(kafka.topics.all())
    stack.broker.restart()
    ensure_topics(kafka, kafka.topics.all())  # another service's start creates them again, with new ids
    exits: list[int] = []
    settings = HealthSettings(state_dir=tmp_path)
    watch = BrokerWatch("writer", kafka, [kafka.topics.valid], StatsCounter("writer"), settings, at_start, exits.append)
    try:
        watch.check()
    finally:
        if watch._admin is not None:
            watch._admin.close()
    assert exits == [EXIT_BROKER_STATE_LOST]


@pytest.mark.production
def test_stopped_with_the_broker_gone_every_service_ends_within_its_deadline(stack: DevStack, tmp_path: Path) -> None:
    """SIGTERM with no broker to take the last commit: faust's stop waited for it forever (60 s and counting), and
    the writer's ended in aiokafka's traceback. Each ends by its deadline now, saying why, its log structured to the
    end."""
    stop_within_s = 3.0
    env = pipeline_env(stack, tmp_path) | {"LINEWATCH_STOP_WITHIN_S": str(stop_within_s)}
    processes = [
        ServiceProcess(name, env, tmp_path / f"{name}.log", health_port=free_port()).start()
        for name in (*PIPELINE, "gateway")  # the gateway with no source configured: only its stop is in question
    ]
    try:
        wait_until("every service ready", lambda: all(p.readiness()[0] for p in processes), 90)
        assert stack.broker.process is not None
        stack.broker.process.kill()
        stack.broker.process.wait(10)
        wait_until("readiness says the broker is away", lambda: not any(p.readiness()[0] for p in processes), 20)
        stopped = time.monotonic()
        for process in processes:
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
        exit_codes = {p.name: p.process.wait(stop_within_s + 20) for p in processes if p.process is not None}
        took_s = time.monotonic() - stopped
    finally:
        for process in processes:
            process.kill()

    assert took_s < stop_within_s + 5, exit_codes
    for name, code in exit_codes.items():
        lines = (tmp_path / f"{name}.log").read_text().splitlines()
        # One JSON object a line throughout: no traceback, no console output of faust's (its spinner's "OK ^").
        assert [line for line in lines if not line.startswith("{")] == [], name
        overran = [line for line in lines if "stop did not finish in time" in line]
        # Either it stopped on its own (the writer does, once aiokafka's close is past) or its deadline ended it.
        assert (code, len(overran)) in ((0, 0), (STOP_OVERRUN_EXIT, 1)), (name, code, overran)
    log.info("stop with the broker gone", extra={"took_s": round(took_s, 1), "exit_codes": exit_codes})
