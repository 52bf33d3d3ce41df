"""`linewatch up`: the embedded broker and InfluxDB, a first model trained on simulated normal operation, every
pipeline service and the plant simulator, and a live view until Ctrl-C (or --for-s)."""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live

from linewatch.core.health import EXIT_BROKER_STATE_LOST
from linewatch.core.kafka import ensure_topics
from linewatch.core.services import PIPELINE
from linewatch.core.settings import KafkaSettings
from linewatch.tools.devstack import DevStack, Mosquitto, free_port
from linewatch.tools.drill import pipeline_env, train
from linewatch.tools.launcher import ServiceProcess, Supervisor
from linewatch.tools.liveview import AlarmFeed, PipelineView, StatsReader


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same clean stop as Ctrl-C: every service, the broker and influxd by PID


def _equipment_source(source: str, run_dir: Path) -> tuple[dict[str, str], Mosquitto | None]:
    """With --source opcua|sparkplug the simulator serves the plant over that protocol and the gateway reads it:
    the gateway's settings (and the port for the simulator), and the MQTT broker Sparkplug B needs."""
    if source == "kafka":
        return {}, None
    env = {"LINEWATCH_BUFFER__PATH": str(run_dir / "gateway-buffer.sqlite")}
    if source == "opcua":
        opcua = free_port()
        return env | {"LINEWATCH_OPCUA__ENDPOINT": f"opc.tcp://127.0.0.1:{opcua}/linewatch/", "port": str(opcua)}, None
    mosquitto = Mosquitto().start()
    mqtt = str(mosquitto.port)
    return env | {"LINEWATCH_MQTT__HOST": "127.0.0.1", "LINEWATCH_MQTT__PORT": mqtt, "port": mqtt}, mosquitto


def up(args: argparse.Namespace) -> int:
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="linewatch-up-"))
    # Its readers' complaints while the broker is away would scribble over the live view, which shows the loss.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    console = Console()
    with DevStack() as stack:
        env = pipeline_env(stack, run_dir)
        kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap)
        ensure_topics(kafka, kafka.topics.all())
        console.print(f"training anomaly models on {args.train_hours:g} h of simulated normal operation ...")
        train(env, args.train_hours)
        simulator_args: tuple[str, ...] = (
            *("--speed", str(args.speed), "--duration-s", str(args.duration_s)),
            *("--random-faults", str(args.random_faults), "--malformed-share", str(args.malformed_share)),
            *("--labels", str(run_dir / "fault-labels.jsonl")),
        )
        gateway_env, mosquitto = _equipment_source(args.source, run_dir)
        if gateway_env:
            simulator_args += ("--serve", args.source, "--port", gateway_env.pop("port"))
        names = [*PIPELINE, "gateway"] if gateway_env else list(PIPELINE)
        processes = [
            ServiceProcess(name, env | gateway_env, run_dir / f"{name}.log", health_port=free_port()).start()
            for name in names
        ]
        simulator = ServiceProcess("simulator", env, run_dir / "simulator.log", simulator_args).start()
        supervisor = Supervisor([*processes, simulator], reset=stack.broker.restart)
        reader = StatsReader(kafka)
        alarms = AlarmFeed(kafka)
        view = PipelineView()
        title = (
            f"linewatch — broker {stack.broker.bootstrap}, InfluxDB {stack.influxd.url} "
            f"(db {stack.database}); logs in {run_dir}; Ctrl-C stops"
        )
        # The operator's token is this run's throw-away one; printed so `linewatch alarms` works alongside.
        console.print(
            "alarm API: export LINEWATCH_API_PORT={} LINEWATCH_OPERATOR_TOKEN={}; linewatch alarms list".format(
                env["LINEWATCH_API_PORT"], env["LINEWATCH_OPERATOR_TOKEN"]
            )
        )
        deadline = time.monotonic() + args.for_s if args.for_s else None
        probed = 0.0
        try:
            with Live(view.render(title), console=console, refresh_per_second=2) as live:
                while deadline is None or time.monotonic() < deadline:
                    reader.poll(view.add, 0.3)
                    alarms.poll(0.2)
                    broker_lost = not stack.broker.alive()
                    if broker_lost:  # memory only: it comes back empty, and the services see that
                        stack.broker.start()
                        view.note("the broker died and was started again: every topic and offset it held is lost")
                    restarts = supervisor.check()
                    for restart in restarts:
                        view.note(restart.describe())
                    if broker_lost or any(r.exit_code == EXIT_BROKER_STATE_LOST for r in restarts):
                        reader, alarms = reader.reopened(), alarms.reopened()  # its positions are the old broker's
                    if failing := supervisor.failing():
                        console.print(f"[red]service(s) keep failing: {failing}; see their logs in {run_dir}")
                        return 1
                    if time.monotonic() - probed > 2.0:
                        view.health = {p.name: p.readiness() for p in processes}
                        probed = time.monotonic()
                    live.update(Group(view.render(title), view.render_health(), alarms.render_areas(), alarms.render()))
        except KeyboardInterrupt:
            pass
        finally:
            reader.close()
            alarms.close()
            for process in [simulator, *reversed(processes)]:
                process.stop()
            if mosquitto is not None:
                mosquitto.stop()
    console.print(f"stopped; logs kept in {run_dir}")
    return 0
